//! einhorn's control messages, as far as readiness needs them
//! (`--readiness=einhorn`): a worker connects to EINHORN_SOCK_PATH and
//! writes one line, `{"command": "worker:ack", "pid": 1234}`. einhorn
//! reads each line as YAML, of which that JSON object is a case; its older
//! clients send YAML of their own with the newlines escaped
//! (`---%0Acommand: worker:ack%0Apid: 1234%0A`). Both are read here: a
//! JSON object whose members are strings, integers or other JSON values
//! (skipped), or that escaped form with one `key: value` per line.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys::{self, Pid};

/// The longest line read from a connection: a longer one drops it.
pub const LINE_MAX: usize = 4096;
/// Connections read at once; more are closed unread.
pub const CONNS_MAX: usize = 64;

/// A control connection being read, line by line.
pub struct Conn {
    pub fd: OwnedFd,
    /// The connecting process, as the kernel saw it.
    pub peer: Option<Pid>,
    buf: Vec<u8>,
}

/// How a connection's reading ended.
#[derive(Debug, PartialEq)]
pub enum End {
    /// Not yet: more may come.
    Open,
    /// End of file (a partial line at the end does not count).
    Closed,
    /// An error, or a line longer than LINE_MAX: why.
    Dropped(String),
}

impl Conn {
    pub fn new(fd: OwnedFd, peer: Option<Pid>) -> Conn {
        Conn {
            fd,
            peer,
            buf: Vec::new(),
        }
    }

    /// Reads what has arrived: the complete lines (without their
    /// newlines), and whether the connection is over.
    pub fn read(&mut self) -> (Vec<Vec<u8>>, End) {
        let mut chunk = [0u8; 1024];
        let end = loop {
            match sys::read(self.fd.as_raw_fd(), &mut chunk) {
                Ok(0) => break End::Closed,
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break End::Open,
                Err(e) => break End::Dropped(crate::log::errtext(&e)),
            }
            if self.buf.len() > LINE_MAX.saturating_mul(4) {
                break End::Open;
            }
        };
        let mut lines = Vec::new();
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(i.saturating_add(1));
            let mut line = std::mem::replace(&mut self.buf, rest);
            line.pop();
            lines.push(line);
        }
        if self.buf.len() > LINE_MAX {
            return (
                lines,
                End::Dropped(format!("a line longer than {LINE_MAX} bytes")),
            );
        }
        (lines, end)
    }
}

/// What a line asks.
#[derive(Debug, PartialEq)]
pub enum Message {
    /// `worker:ack` for this pid.
    Ack(Pid),
    /// Anything else einhorn knows (or not): ignored.
    Other,
}

/// Reads one line (without its newline); why it is not a message.
#[inline(never)]
pub fn parse(line: &[u8]) -> Result<Message, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let text = text.trim();
    let fields = match text.strip_prefix("---") {
        Some(yaml) => escaped_yaml(yaml)?,
        None => json_object(text)?,
    };
    let get = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    if get("command") != Some("worker:ack") {
        return Ok(Message::Other);
    }
    let pid = get("pid").ok_or("a worker:ack without a pid")?;
    pid.parse::<Pid>()
        .ok()
        .filter(|&p| p > 0)
        .map(Message::Ack)
        .ok_or_else(|| format!("a worker:ack with pid \"{pid}\", not a process id"))
}

/// `%0Acommand: worker:ack%0Apid: 12%0A` (after the `---`): its
/// `key: value` lines.
fn escaped_yaml(text: &str) -> Result<Vec<(String, String)>, String> {
    let text = text.replace("%0A", "\n").replace("%25", "%");
    let mut fields = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a YAML mapping line: \"{line}\""))?;
        let value = value.trim();
        let value = value
            .strip_prefix(['"', '\''])
            .and_then(|v| v.strip_suffix(['"', '\'']))
            .unwrap_or(value);
        fields.push((key.trim().to_string(), value.to_string()));
    }
    Ok(fields)
}

/// A JSON object's members whose values are strings or integers (others
/// are skipped); an error for anything that is not one object.
fn json_object(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Json {
        s: text.as_bytes(),
        at: 0,
    };
    let bad = || format!("not a JSON object: \"{text}\"");
    p.space();
    p.eat(b'{').ok_or_else(bad)?;
    let mut fields = Vec::new();
    p.space();
    if p.eat(b'}').is_none() {
        loop {
            p.space();
            let key = p.string().ok_or_else(bad)?;
            p.space();
            p.eat(b':').ok_or_else(bad)?;
            p.space();
            if let Some(value) = p.scalar() {
                fields.push((key, value));
            } else {
                p.skip_value(0).ok_or_else(bad)?;
            }
            p.space();
            if p.eat(b'}').is_some() {
                break;
            }
            p.eat(b',').ok_or_else(bad)?;
        }
    }
    p.space();
    match p.at == p.s.len() {
        true => Ok(fields),
        false => Err(bad()),
    }
}

/// A cursor over JSON text.
struct Json<'a> {
    s: &'a [u8],
    at: usize,
}

/// Nesting deeper than this is refused.
const DEPTH_MAX: usize = 32;

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn bump(&mut self) {
        self.at = self.at.saturating_add(1);
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek() == Some(c)).then(|| self.bump())
    }

    fn space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.bump();
        }
    }

    /// A string, its escapes decoded (\uXXXX outside the BMP's surrogates
    /// only; a lone surrogate makes it invalid).
    fn string(&mut self) -> Option<String> {
        self.eat(b'"')?;
        let mut out = String::new();
        loop {
            let c = self.peek()?;
            self.bump();
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    let e = self.peek()?;
                    self.bump();
                    out.push(match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.s.get(self.at..self.at.checked_add(4)?)?;
                            self.at = self.at.checked_add(4)?;
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            char::from_u32(code)?
                        }
                        _ => return None,
                    });
                }
                c if c < 0x20 => return None,
                _ => {
                    // A UTF-8 sequence, copied whole (the text is UTF-8).
                    let start = self.at.saturating_sub(1);
                    while self.peek().is_some_and(|b| b & 0xc0 == 0x80) {
                        self.bump();
                    }
                    out.push_str(std::str::from_utf8(self.s.get(start..self.at)?).ok()?);
                }
            }
        }
    }

    /// A string or an integer, as text; None (nothing consumed) for any
    /// other value.
    fn scalar(&mut self) -> Option<String> {
        match self.peek()? {
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                self.eat(b'-');
                while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    self.bump();
                }
                if matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
                    self.at = start;
                    return None;
                }
                std::str::from_utf8(self.s.get(start..self.at)?)
                    .ok()
                    .map(String::from)
            }
            _ => None,
        }
    }

    /// Skips any value (a number, true, false, null, an array, an
    /// object).
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        match self.peek()? {
            b'"' => self.string().map(drop),
            open @ (b'[' | b'{') => {
                let close = if open == b'[' { b']' } else { b'}' };
                self.bump();
                self.space();
                if self.eat(close).is_some() {
                    return Some(());
                }
                loop {
                    self.space();
                    if open == b'{' {
                        self.string()?;
                        self.space();
                        self.eat(b':')?;
                        self.space();
                    }
                    self.skip_value(depth.saturating_add(1))?;
                    self.space();
                    if self.eat(close).is_some() {
                        return Some(());
                    }
                    self.eat(b',')?;
                }
            }
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                {
                    self.bump();
                }
                let word = self.s.get(start..self.at)?;
                let number = word
                    .first()
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'-');
                (number || matches!(word, b"true" | b"false" | b"null")).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_as_goji_and_einhorn_clients_send_them() {
        assert_eq!(
            parse(br#"{"command": "worker:ack", "pid": 1234}"#),
            Ok(Message::Ack(1234))
        );
        assert_eq!(
            parse(b" {\t\"pid\":7 ,\"command\" :\"worker:ack\"}  "),
            Ok(Message::Ack(7))
        );
        assert_eq!(
            parse(b"---%0Acommand: worker:ack%0Apid: 42%0A"),
            Ok(Message::Ack(42))
        );
        assert_eq!(
            parse(br#"{"command":"worker:ack","pid":9,"extra":[1,{"a":null}],"x":1.5}"#),
            Ok(Message::Ack(9))
        );
        // The escapes einhorn's JSON may hold.
        assert_eq!(
            parse(br#"{"command":"worker\u003aack","pid":"12"}"#),
            Ok(Message::Ack(12))
        );
    }

    #[test]
    fn other_commands_are_ignored_and_bad_lines_refused() {
        assert_eq!(parse(br#"{"command":"state"}"#), Ok(Message::Other));
        assert_eq!(parse(b"---%0Acommand: upgrade%0A"), Ok(Message::Other));
        for bad in [
            &b"worker:ack 12"[..],
            br#"{"command":"worker:ack"}"#,
            br#"{"command":"worker:ack","pid":-3}"#,
            br#"{"command":"worker:ack","pid":"x"}"#,
            br#"{"command":"worker:ack","pid":1.5}"#,
            br#"{"command":"worker:ack","pid":12"#,
            br#"{"command":"worker:ack","pid":12} trailing"#,
            b"\xff",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(parse(deep.as_bytes()).is_err());
    }
}
