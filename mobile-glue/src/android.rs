//! The one JNI entry point of the library (Android only): handing the platform verifier
//! the JVM and the app's `Context` it verifies relay certificates through. UniFFI cannot
//! pass a `Context`, so this is a plain JNI native method of a Kotlin object the app adds:
//!
//! ```kotlin
//! package tidings.mobile
//!
//! object TidingsPlatform {
//!     init { System.loadLibrary("tidings_mobile") }
//!     @JvmStatic external fun initPlatformVerifier(context: android.content.Context)
//! }
//! ```
//!
//! Called once (e.g. in `Application.onCreate`) before the first client that uses
//! `TrustStore.PLATFORM`; a failure is thrown as a `RuntimeException`.

use tidings_device_link::tls::{
    self,
    jni::{
        EnvUnowned,
        errors::ThrowRuntimeExAndDefault,
        objects::{JClass, JObject},
    },
};

/// `tidings.mobile.TidingsPlatform.initPlatformVerifier(context)`.
#[unsafe(no_mangle)]
pub extern "system" fn Java_tidings_mobile_TidingsPlatform_initPlatformVerifier<'caller>(
    mut env: EnvUnowned<'caller>,
    _class: JClass<'caller>,
    context: JObject<'caller>,
) {
    env.with_env(|env| tls::init_android(env, context))
        .resolve::<ThrowRuntimeExAndDefault>()
}
