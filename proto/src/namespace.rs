//! Mailbox namespaces: who may deposit where.

/// The largest namespace number.
pub const MAX: i32 = 32_767;
/// Namespaces `0..=PUBLIC_MAX` accept anyone's Store (that is how messages reach you).
pub const PUBLIC_MAX: i32 = 9;

/// Whether a Store into `namespace` needs the owner's signature.
pub fn is_owner_only(namespace: i32) -> bool {
    namespace > PUBLIC_MAX
}

/// Whether `namespace` is a valid namespace number at all.
pub fn is_valid(namespace: i32) -> bool {
    (0..=MAX).contains(&namespace)
}
