//! The `chatter` command-line tool.

fn main() {
    println!("chatter");
}
