#[global_allocator]
static ALLOCATOR: start_server::Arena = start_server::Arena;

fn main() {
    std::process::exit(start_server::main());
}
