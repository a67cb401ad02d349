//! MAC addresses as text: lower case, colon separated, two digits a byte
//! (how iproute2 prints them and how the labs compare them).

/// True for six colon-separated groups of one or two hex digits (iputils
/// and Habets' arping print `6A:0B:…` or `6a:b:…`).
pub fn is_mac(text: &str) -> bool {
    let parts: Vec<_> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| (1..=2).contains(&p.len()) && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Normalises a MAC to lower case with two digits per byte.
pub fn normalize(text: &str) -> String {
    text.split(':')
        .map(|p| format!("{:0>2}", p.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(":")
}

/// The bytes of a MAC written as text; `None` unless [`is_mac`].
pub fn parse(text: &str) -> Option<[u8; 6]> {
    if !is_mac(text) {
        return None;
    }
    let mut out = [0u8; 6];
    for (byte, part) in out.iter_mut().zip(text.split(':')) {
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    Some(out)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mac = [0x6a, 0x0b, 0x1c, 0x2d, 0x3e, 0x4f];
        assert_eq!(format(mac), "6a:0b:1c:2d:3e:4f");
        assert_eq!(parse("6A:b:1c:2d:3e:4f"), Some(mac));
        assert_eq!(normalize("6A:b:1c:2d:3e:4f"), "6a:0b:1c:2d:3e:4f");
        assert_eq!(parse("6a:0b:1c:2d:3e"), None);
        assert_eq!(parse("6a:0b:1c:2d:3e:4g"), None);
    }
}
