//! `openapi/asyncapi.yaml` must equal the AsyncAPI document the protocol crate generates from
//! its frame types (the test command also validates it with the AsyncAPI parser).
//!
//! Regenerate it with: `SWITCHBOARD_WRITE_ASYNCAPI=1 cargo test -p switchboard --test asyncapi`

mod support;

#[test]
fn committed_asyncapi_equals_the_generated_document() {
    let generated = switchboard_protocol::asyncapi::yaml();
    assert!(generated.starts_with("asyncapi: 3.0.0\n"), "{generated}");
    support::committed_file_matches(
        "openapi/asyncapi.yaml",
        &generated,
        "SWITCHBOARD_WRITE_ASYNCAPI",
    );
}
