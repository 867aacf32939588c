//! The link QR code drawn with Unicode half blocks, two modules per character cell.

use qrcode::{EcLevel, QrCode, render::unicode::Dense1x2};

use crate::error::CliError;

/// `payload` as a QR code, light on dark as most terminals are (with its quiet zone, so
/// a camera finds it on a dark background too).
pub fn render(payload: &str) -> Result<String, CliError> {
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .map_err(|e| CliError::Internal(format!("the link code does not fit a QR code: {e}")))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_code_fits_a_terminal() {
        let payload = format!("tidings-link:v2:{}", "A".repeat(200));
        let drawn = render(&payload).unwrap();
        let width = drawn.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(width <= 80, "{width} columns");
        assert!(drawn.lines().count() <= 40);
    }
}
