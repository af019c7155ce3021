fn main() {
    std::process::exit(start_server::main());
}
