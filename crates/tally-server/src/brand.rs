//! The host app's look on the billing page (TALLY_APP_NAME, TALLY_APP_URL,
//! TALLY_BRAND_COLOR): its name, a link back to it and one accent colour, with text
//! colours picked so that any accent keeps the page readable (WCAG contrast).

/// What the billing page borrows from the host app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brand {
    /// The app's name; `None`: the page says only "Billing".
    pub app_name: Option<String>,
    /// Where "Back to the app" leads.
    pub app_url: Option<String>,
    pub color: Color,
}

impl Default for Brand {
    fn default() -> Brand {
        Brand { app_name: None, app_url: None, color: Color::DEFAULT }
    }
}

/// WCAG AA contrast for normal text.
const AA: f64 = 4.5;

/// An sRGB colour, from `#rgb` or `#rrggbb` only: what goes into the page's CSS is
/// always six hex digits, never the raw setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color([u8; 3]);

impl Color {
    /// tally's own blue.
    pub const DEFAULT: Color = Color([0x2b, 0x59, 0xc3]);
    pub const WHITE: Color = Color([0xff, 0xff, 0xff]);
    /// The page's text colour.
    pub const INK: Color = Color([0x1d, 0x24, 0x30]);

    pub fn parse(text: &str) -> Result<Color, String> {
        let bad = || format!("expected a colour such as #2b59c3 or #25c, got {text:?}");
        let hex = text.strip_prefix('#').filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit())).ok_or_else(bad)?;
        let digit = |i: usize| u8::from_str_radix(&hex[i..i + 1], 16).expect("a hex digit");
        match hex.len() {
            3 => Ok(Color([digit(0) * 17, digit(1) * 17, digit(2) * 17])),
            6 => Ok(Color([digit(0) * 16 + digit(1), digit(2) * 16 + digit(3), digit(4) * 16 + digit(5)])),
            _ => Err(bad()),
        }
    }

    /// `#rrggbb`, for CSS.
    pub fn css(self) -> String {
        let [r, g, b] = self.0;
        format!("#{r:02x}{g:02x}{b:02x}")
    }

    /// A button of this accent: its background and text colours. White or ink text,
    /// whichever reads at 4.5:1 (WCAG AA); a mid tone that neither does is darkened.
    pub fn button(self) -> (Color, Color) {
        match (self.contrast(Color::WHITE), self.contrast(Color::INK)) {
            (white, _) if white >= AA => (self, Color::WHITE),
            (_, ink) if ink >= AA => (self, Color::INK),
            _ => (self.darkened_to(AA), Color::WHITE),
        }
    }

    /// This colour as text (links, outlines) on the white cards, darkened if it is too
    /// light for that.
    pub fn as_text(self) -> Color {
        self.darkened_to(AA)
    }

    /// This hue, darkened until white reads on it (and it on white) at `ratio`.
    fn darkened_to(self, ratio: f64) -> Color {
        let mut color = self;
        for step in 1..=10 {
            if color.contrast(Color::WHITE) >= ratio {
                break;
            }
            color = Color(self.0.map(|c| (f64::from(c) * (1.0 - f64::from(step) / 10.0)).round() as u8));
        }
        color
    }

    /// WCAG 2 relative luminance.
    fn luminance(self) -> f64 {
        let channel = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.039_28 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
        };
        let [r, g, b] = self.0.map(channel);
        0.2126 * r + 0.7152 * g + 0.0722 * b
    }

    /// WCAG 2 contrast ratio, 1 to 21.
    fn contrast(self, other: Color) -> f64 {
        let (a, b) = (self.luminance(), other.luminance());
        (a.max(b) + 0.05) / (a.min(b) + 0.05)
    }
}

#[cfg(test)]
mod tests {
    use super::Color;

    #[test]
    fn colours_are_three_or_six_hex_digits_only() {
        assert_eq!(Color::parse("#25c").unwrap().css(), "#2255cc");
        assert_eq!(Color::parse("#0A7D55").unwrap().css(), "#0a7d55");
        for bad in ["25c", "#25", "#2b59c", "#12345g", "red", "#2b59c3;}body{", "rgb(1,2,3)", "#", "#ééé"] {
            assert!(Color::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn text_keeps_its_contrast_on_any_accent() {
        let yellow = Color::parse("#ffd400").unwrap();
        assert_eq!(yellow.button(), (yellow, Color::INK), "dark text on a light accent");
        assert_ne!(yellow.as_text(), yellow, "too light for links on white");
        let blue = Color::DEFAULT;
        assert_eq!(blue.button(), (blue, Color::WHITE));
        assert_eq!(blue.as_text(), blue);
        for text in ["#ffd400", "#2b59c3", "#777", "#0f0", "#fff", "#000", "#e4572e", "#808080"] {
            let accent = Color::parse(text).unwrap();
            let (background, ink) = accent.button();
            assert!(background.contrast(ink) >= 4.5, "{text}");
            assert!(accent.as_text().contrast(Color::WHITE) >= 4.5, "{text}");
        }
    }
}
