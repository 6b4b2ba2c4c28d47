//! The HTTP API is generated from `openapi/openapi.json` by a macro, which cargo does not know
//! reads that file: this tells cargo to rebuild the crate whenever the spec changes.

fn main() {
    println!("cargo:rerun-if-changed=../openapi/openapi.json");
}
