//! A plugin's key-value state: small, bounded, in RAM only.
//!
//! It outlives an instance (a trap, a new version) but never the daemon, and the host clears
//! it whenever per-device data must go (key rotation, a new opt-out). It is never written to
//! disk: plugins may keep pseudonyms in it.

use std::collections::BTreeMap;

#[derive(Default, Debug, Clone)]
pub struct State {
    entries: BTreeMap<String, Vec<u8>>,
    /// Keys and values together, in bytes.
    bytes: usize,
}

/// Storing would exceed the budget.
#[derive(Debug, PartialEq, Eq)]
pub struct StateFull;

impl State {
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entries.get(key).map(Vec::as_slice)
    }

    pub fn set(&mut self, key: String, value: Vec<u8>, budget: usize) -> Result<(), StateFull> {
        let freed = self.entries.get(&key).map_or(0, |v| key.len() + v.len());
        let after = self.bytes - freed + key.len() + value.len();
        if after > budget {
            return Err(StateFull);
        }
        self.bytes = after;
        self.entries.insert(key, value);
        Ok(())
    }

    pub fn delete(&mut self, key: &str) {
        if let Some((k, v)) = self.entries.remove_entry(key) {
            self.bytes -= k.len() + v.len();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_counts_keys_and_values_and_frees_on_replace_and_delete() {
        let mut s = State::default();
        s.set("a".into(), vec![0; 9], 10).unwrap();
        assert_eq!(s.bytes(), 10);
        assert_eq!(s.set("b".into(), vec![], 10), Err(StateFull));
        // Replacing a value frees the old one first.
        s.set("a".into(), vec![1; 9], 10).unwrap();
        assert_eq!(s.get("a"), Some(&[1u8; 9][..]));
        s.delete("a");
        assert_eq!(s.bytes(), 0);
        s.set("b".into(), vec![2; 9], 10).unwrap();
        s.clear();
        assert_eq!(s.get("b"), None);
    }
}
