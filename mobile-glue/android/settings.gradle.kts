// The Android library module of the tidings SDK, as its own Gradle build (an app includes
// it with `includeBuild("path/to/tidings/mobile-glue/android")`, or publishes the AAR).
// Not exercised on the CI machine (no Android SDK or NDK there); docs/mobile.md "Android
// package" describes it.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
        // rustls-platform-verifier's Kotlin component (TrustStore.PLATFORM) is served from
        // rustls' own Maven repository, not Maven Central.
        maven {
            url = uri("https://github.com/rustls/rustls-platform-verifier/raw/maven-archive/android-release-support/maven/")
            content { includeGroupByRegex("(org\\.)?rustls") }
        }
    }
}

rootProject.name = "tidings-mobile"
