package tidings.mobile

import android.content.Context

/**
 * Hands the platform verifier (`TrustStore.PLATFORM`) the app's [Context], once per
 * process, before the first `TidingsClient.open`: call [initPlatformVerifier] first thing
 * in `Application.onCreate` (which also runs before a `FirebaseMessagingService` of the
 * same process). Later calls do nothing; a failure is thrown as a `RuntimeException`.
 *
 * Its native method is the library's JNI export
 * `Java_tidings_mobile_TidingsPlatform_initPlatformVerifier` (mobile-glue/src/android.rs),
 * which resolves only in a library loaded with `System.loadLibrary` (JNA's loading does
 * not register JNI methods; loading the same library twice is harmless).
 */
object TidingsPlatform {
    init {
        System.loadLibrary("tidings_mobile")
    }

    /** Initialises the platform verifier with the application's context. */
    @JvmStatic
    external fun initPlatformVerifier(context: Context)
}
