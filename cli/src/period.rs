//! Reporting windows: `5m`, `1h`, `24h`, `7d`, `30d`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    M5,
    H1,
    H24,
    D7,
    D30,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("period {0:?} is not one of 5m, 1h, 24h, 7d, 30d")]
pub struct PeriodError(pub String);

impl Period {
    pub const ALL: [Period; 5] = [Period::M5, Period::H1, Period::H24, Period::D7, Period::D30];

    pub fn as_str(self) -> &'static str {
        match self {
            Period::M5 => "5m",
            Period::H1 => "1h",
            Period::H24 => "24h",
            Period::D7 => "7d",
            Period::D30 => "30d",
        }
    }

    pub fn duration(self) -> Duration {
        let mins = match self {
            Period::M5 => 5,
            Period::H1 => 60,
            Period::H24 => 24 * 60,
            Period::D7 => 7 * 24 * 60,
            Period::D30 => 30 * 24 * 60,
        };
        Duration::from_secs(mins * 60)
    }

    /// The window's start in unix milliseconds, given the current time.
    pub fn since_ms(self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.duration().as_millis() as u64)
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, PeriodError> {
        let t = s.trim();
        Period::ALL
            .into_iter()
            .find(|p| p.as_str() == t)
            .ok_or_else(|| PeriodError(s.to_string()))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_five_periods() {
        assert_eq!("5m".parse::<Period>().unwrap(), Period::M5);
        assert_eq!(
            "1h".parse::<Period>().unwrap().duration(),
            Duration::from_secs(3600)
        );
        assert_eq!("24h".parse::<Period>().unwrap(), Period::H24);
        assert_eq!(
            "7d".parse::<Period>().unwrap().duration(),
            Duration::from_secs(7 * 86400)
        );
        assert_eq!("30d".parse::<Period>().unwrap().to_string(), "30d");
        assert_eq!(Period::H1.since_ms(10_000_000), 10_000_000 - 3_600_000);
        assert_eq!(Period::D30.since_ms(5), 0);
    }

    #[test]
    fn rejects_other_periods_with_the_allowed_list() {
        for bad in ["", "1d", "60m", "2h", "1w", "h", "-5m"] {
            let e = bad.parse::<Period>().unwrap_err();
            assert!(e.to_string().contains("5m, 1h, 24h, 7d, 30d"), "{e}");
        }
    }
}
