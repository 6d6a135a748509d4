//! The macros' own errors, each pointing at what is wrong (`tests/ui/*.stderr`).

#[test]
fn misuses_are_refused_with_a_message_at_the_offending_place() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
