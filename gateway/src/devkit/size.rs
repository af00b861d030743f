//! How big a component may be before routers refuse its bundle.

/// A router's default `bundles.max_bytes`: the whole bundle (component, manifest, signature
/// and any precompiled code) must fit in it.
pub const DEFAULT_BUNDLE_LIMIT: usize = 4 << 20;

/// Above this share of the limit, `plugin build` warns: precompiled code and a later version
/// need room too.
const NEAR_PERCENT: usize = 75;

/// A warning for a component (or bundle) of `bytes`, if it is near or over the default limit.
pub fn warning(what: &str, bytes: usize) -> Option<String> {
    let mib = |b: usize| b as f64 / f64::from(1u32 << 20);
    if bytes > DEFAULT_BUNDLE_LIMIT {
        Some(format!(
            "warning: {what} is {:.1} MiB, over the {:.0} MiB bundle limit routers enforce by default (bundles.max_bytes): they will refuse it. docs/languages.md says which languages fit",
            mib(bytes),
            mib(DEFAULT_BUNDLE_LIMIT)
        ))
    } else if bytes * 100 > DEFAULT_BUNDLE_LIMIT * NEAR_PERCENT {
        Some(format!(
            "warning: {what} is {:.1} MiB, near the {:.0} MiB bundle limit routers enforce by default (bundles.max_bytes)",
            mib(bytes),
            mib(DEFAULT_BUNDLE_LIMIT)
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_components_pass_silently_and_large_ones_are_named() {
        assert_eq!(warning("x.wasm", 70_000), None);
        let near = warning("x.wasm", 3_500_000).unwrap();
        assert!(near.contains("near"), "{near}");
        let over = warning("x.wasm", 12 << 20).unwrap();
        assert!(over.contains("over") && over.contains("12.0 MiB"), "{over}");
    }
}
