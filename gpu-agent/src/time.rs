//! Wall-clock helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch by the system clock (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a period such as `90s`, `5m`, `1h`, `24h`, `7d` into milliseconds.
pub fn parse_period_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse() {
        assert_eq!(parse_period_ms("5m"), Some(300_000));
        assert_eq!(parse_period_ms("1h"), Some(3_600_000));
        assert_eq!(parse_period_ms("24h"), Some(86_400_000));
        assert_eq!(parse_period_ms("30s"), Some(30_000));
        assert_eq!(parse_period_ms("0m"), None);
        assert_eq!(parse_period_ms("5"), None);
        assert_eq!(parse_period_ms("m"), None);
        assert_eq!(parse_period_ms("5y"), None);
    }
}
