// tidings-mobile for Android: an AAR with the Rust library for arm64-v8a, armeabi-v7a and
// x86_64 (built by cargo-ndk, 16 KB page aligned), the generated UniFFI bindings
// (../bindings/kotlin), the Flow layer (src/main/kotlin/tidings/mobile/flow) and the
// platform-verifier hook (TidingsPlatform).
//
//   gradle :assembleRelease      ->  build/outputs/aar/tidings-mobile-release.aar
//
// Needs: the Android SDK (compileSdk below), NDK r27 (ndkVersion below), Rust with the
// three Android targets, and cargo-ndk (build-rust.sh says how to install them).
// Written to the platform's conventions; not built on the CI machine (no Android SDK).
plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.4.20"
}

/** The rustls-platform-verifier-android crate's version in Cargo.lock: the AAR must match it. */
val platformVerifierVersion = "0.2.0"

android {
    namespace = "tidings.mobile"
    compileSdk = 35
    // r27 LTS: links 16 KB-aligned libraries with the flag build-rust.sh passes (r28 and
    // later align by default).
    ndkVersion = "27.2.12479018"

    defaultConfig {
        // Android 7.0: the oldest release whose trust manager the platform verifier checks
        // revocation with; Rust's Android targets and NDK r27 go down to 21.
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    sourceSets["main"].apply {
        kotlin.srcDirs("src/main/kotlin", "../bindings/kotlin")
        jniLibs.srcDirs(layout.buildDirectory.dir("rustJniLibs").get().asFile)
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    buildTypes {
        release {
            // A library is not minified itself; consumer-rules.pro protects it in the app.
            isMinifyEnabled = false
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // The generated bindings call the library through JNA; Android needs the AAR (it
    // carries libjnidispatch.so for each ABI).
    api("net.java.dev.jna:jna:5.17.0@aar")
    api("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.10.2")
    // TrustStore.PLATFORM: the Kotlin half of rustls-platform-verifier (group as its README
    // gives it; check it when bumping the crate).
    implementation("rustls:rustls-platform-verifier:$platformVerifierVersion")
}

// cargo-ndk, once per build, before the JNI libraries are merged.
val buildRust by tasks.registering(Exec::class) {
    description = "Builds libtidings_mobile.so for every ABI with cargo-ndk (build-rust.sh)."
    val out = layout.buildDirectory.dir("rustJniLibs")
    val ndk = androidComponents.sdkComponents.ndkDirectory
    inputs.files(
        fileTree("../..") {
            include("Cargo.lock", "Cargo.toml", "*/Cargo.toml", "*/src/**", "proto/proto/**")
            exclude("target/**", "mobile-glue/android/**")
        },
    )
    outputs.dir(out)
    workingDir = projectDir
    doFirst { environment("ANDROID_NDK_HOME", ndk.get().asFile.absolutePath) }
    commandLine("./build-rust.sh", out.get().asFile.absolutePath)
}

tasks.named("preBuild") { dependsOn(buildRust) }
