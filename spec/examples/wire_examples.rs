//! Prints the hex examples of spec/wire.md (`cargo run -p bftlog-spec
//! --example wire_examples`). A test checks that the document contains
//! exactly this output, so the examples cannot drift from the code.

fn main() {
    print!("{}", bftlog_spec::wire::examples_markdown());
}
