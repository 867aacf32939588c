//! `uniffi-bindgen`: the generator of UniFFI 0.32, built from the same uniffi version
//! as `tidings-mobile`, so bindings always match the library's scaffolding.
//!
//! ```text
//! cargo run -p uniffi-bindgen -- generate --library target/debug/libtidings_mobile.so \
//!     --language python --out-dir target/bindings/python
//! ```

fn main() {
    uniffi::uniffi_bindgen_main();
}
