//! --watch: restarts on a change of a watched path, with kubelet's real
//! atomic-writer layout for a mounted ConfigMap, an editor's
//! write-then-rename, a burst of writes, a path that does not exist yet,
//! and across a live upgrade.

use crate::support::*;

/// start_server running the example server with `--watch-delay=0.2` and
/// `options`, its status file in `dir`.
fn watching(dir: &TempDir, options: &[&str]) -> Server {
    let st = format!("--status-file={}", dir.s("status"));
    let port = format!("--port=127.0.0.1:{}", free_port());
    let hello = example("hello").display().to_string();
    let mut args = vec![&port[..], &st, "--readiness=notify", "--watch-delay=0.2"];
    args.extend(options);
    args.extend(["--", &hello]);
    let server = Server::start(&args);
    up(dir, 1, &server);
    server
}

/// Waits until the status file in `dir` lists `generation` alone.
fn up(dir: &TempDir, generation: u64, server: &Server) {
    wait_status(&dir.join("status"), &[generation], server);
}

/// The same in a new directory `name`, watching `app.conf` there
/// (written first): the directory and the file's path.
fn watching_file(name: &str) -> (TempDir, std::path::PathBuf, Server) {
    let dir = TempDir::new(name);
    let conf = dir.join("app.conf");
    std::fs::write(&conf, "0\n").unwrap();
    let arg = format!("--watch={}", conf.display());
    let server = watching(&dir, &[&arg]);
    (dir, conf, server)
}

#[test]
fn a_configmap_updated_by_kubelets_atomic_writer_restarts_watching_the_volume_or_a_file() {
    for watched in ["", "app.conf"] {
        let dir = TempDir::new("watch-configmap");
        let volume = dir.join("config");
        std::fs::create_dir(&volume).unwrap();
        publish(&volume, 1, &[("app.conf", "one\n")]);
        let arg = format!("--watch={}", volume.join(watched).display());
        let mut server = watching(&dir, &[&arg]);
        publish(&volume, 2, &[("app.conf", "two\n")]);
        up(&dir, 2, &server);
        server.wait_line("a watched path changed, spawning a new worker");
        // The watch follows the new version: the next update counts too.
        publish(&volume, 3, &[("app.conf", "three\n")]);
        up(&dir, 3, &server);
        assert!(server.stop().success());
    }
}

#[test]
fn an_editors_write_then_rename_restarts_and_the_new_file_is_watched() {
    let (dir, conf, mut server) = watching_file("watch-editor");
    for (generation, text) in [(2, "two\n"), (3, "three\n")] {
        std::fs::write(dir.join(".app.conf.swp"), text).unwrap();
        std::fs::rename(dir.join(".app.conf.swp"), &conf).unwrap();
        up(&dir, generation, &server);
    }
    // Written in place: a change too.
    std::fs::write(&conf, "four\n").unwrap();
    up(&dir, 4, &server);
    assert!(server.stop().success());
}

/// A burst of 100 writes is one restart: the next generation after it
/// is the burst's, and a HUP after that makes the one after.
#[test]
fn a_burst_of_100_writes_is_one_restart() {
    let (dir, conf, mut server) = watching_file("watch-burst");
    (0..100).for_each(|i| std::fs::write(&conf, format!("{i}\n")).unwrap());
    up(&dir, 2, &server);
    server.signal("HUP");
    up(&dir, 3, &server);
    assert_eq!(
        server.count("changed, restarting once quiet"),
        1,
        "{}",
        server.log()
    );
    assert_eq!(
        server.count("a watched path changed, spawning"),
        1,
        "{}",
        server.log()
    );
    assert!(server.stop().success());
}

/// A path that does not exist yet is watched from its directory: other
/// names there do not count; its creation does.
#[test]
fn a_path_that_does_not_exist_yet_counts_once_created_and_others_do_not() {
    let dir = TempDir::new("watch-later");
    let arg = format!("--watch={}", dir.join("later.conf").display());
    let mut server = watching(&dir, &[&arg]);
    std::fs::write(dir.join("other.conf"), "x\n").unwrap();
    std::fs::write(dir.join("later.conf"), "x\n").unwrap();
    up(&dir, 2, &server);
    server.signal("HUP");
    up(&dir, 3, &server);
    let log = server.log();
    assert_eq!(server.count("changed, restarting once quiet"), 1, "{log}");
    assert_eq!(server.count("later.conf changed"), 1, "{log}");
    assert_eq!(server.count("other.conf"), 0, "{log}");
    assert!(server.stop().success());
}

#[test]
fn the_watch_is_made_again_by_a_live_upgrade() {
    let (dir, conf, mut server) = watching_file("watch-upgrade");
    server.signal("USR2");
    server.wait_line("upgraded in place");
    std::fs::write(&conf, "two\n").unwrap();
    up(&dir, 2, &server);
    assert!(server.stop().success());
}
