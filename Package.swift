// swift-tools-version:5.9
// The tidings SDK for iOS as a Swift package. It lives at the repository root because
// SwiftPM resolves a package dependency by repository URL and reads only the root's
// Package.swift; the sources stay where they are (paths below).
//
//   scripts/build-xcframework.sh     builds mobile-glue/swift/TidingsMobileFFI.xcframework
//                                    (the Rust static library per platform + its C header)
//
// Products:
//   TidingsMobile  the generated UniFFI bindings (mobile-glue/bindings/swift): the app and
//                  its Notification Service Extension both link it
//   TidingsAsync   AsyncStream wrappers for the events and async helpers whose Task
//                  cancellation reaches the SDK (mobile-glue/swift/Sources/TidingsAsync)
//
// A release publishes the zipped XCFramework (build-xcframework.sh --zip prints its
// checksum) and replaces the binaryTarget's `path:` with `url:` + `checksum:`.
//
// Not built on the CI machine (no Swift toolchain or Apple SDK there); the symbols the
// wrappers use are checked against the generated bindings (mobile-glue/tests/swift).
import PackageDescription

let package = Package(
    name: "Tidings",
    // AsyncStream and Task cancellation handlers; the Rust library is built for iOS 15 too.
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "TidingsMobile", targets: ["TidingsMobile"]),
        .library(name: "TidingsAsync", targets: ["TidingsAsync"]),
    ],
    targets: [
        .binaryTarget(
            name: "TidingsMobileFFI",
            path: "mobile-glue/swift/TidingsMobileFFI.xcframework"
        ),
        .target(
            name: "TidingsMobile",
            dependencies: ["TidingsMobileFFI"],
            path: "mobile-glue/bindings/swift",
            // The header and module map are inside the XCFramework.
            exclude: ["TidingsMobileFFI.h", "TidingsMobileFFI.modulemap"],
            sources: ["TidingsMobile.swift"],
            linkerSettings: [
                // What the Rust library calls (rustc --print native-static-libs):
                // certificate checks by the platform verifier, CoreFoundation under it.
                .linkedFramework("Security"),
                .linkedFramework("CoreFoundation"),
            ]
        ),
        .target(
            name: "TidingsAsync",
            dependencies: ["TidingsMobile"],
            path: "mobile-glue/swift/Sources/TidingsAsync"
        ),
    ]
)
