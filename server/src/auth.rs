//! Keys a request presents (the API's `X-Api-Key`, the relay's `?key=`), checked in constant
//! time so a wrong key says nothing about a right one.

/// The keys one door accepts.
#[derive(Debug, Clone, Default)]
pub struct Keys(Vec<String>);

impl Keys {
    pub fn new(keys: Vec<String>) -> Keys {
        Keys(keys)
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `key` is one of the keys, each compared in constant time.
    pub fn accepts(&self, key: Option<&str>) -> bool {
        let Some(key) = key else { return false };
        self.0.iter().fold(false, |found, candidate| found | constant_time_eq(candidate, key))
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_exactly_the_configured_keys() {
        let keys = Keys::new(vec!["alpha".into(), "beta".into()]);
        assert!(keys.accepts(Some("alpha")) && keys.accepts(Some("beta")));
        assert!(!keys.accepts(Some("alph")) && !keys.accepts(Some("alphaa")));
        assert!(!keys.accepts(Some("")) && !keys.accepts(None));
        assert!(!Keys::default().accepts(Some("alpha")) && Keys::default().is_empty());
    }
}
