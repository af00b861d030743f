//! A batch of sightings into a plugin's memory, as the canonical ABI lays out
//! `list<sighting>`, without copying strings on the host or looking memory up per field.
//!
//! The bindings' own `Sighting` owns its strings and lists (a consent token and a tag list
//! copied per sighting and plugin), and its derived lowering writes a record a field at a
//! time, finding the plugin's memory again for each. [`SightingView`] borrows them, and
//! each record is assembled on the stack and copied in at once. A consent token or a
//! non-empty tag list goes through wasmtime's own lowering, which allocates it in the
//! plugin (its `cabi_realloc`).
//!
//! An empty tag list, what almost every sighting has, is written as (align, 0) without
//! calling into the plugin: the canonical ABI asks `cabi_realloc(0, 0, align, 0)` for it,
//! a whole call into wasm per sighting and plugin, to get a pointer no one reads. The
//! guests' bindings answer a request for 0 bytes with `align` itself, allocating nothing
//! (wit-bindgen's Rust and C `cabi_realloc` alike), and lift a list of length 0 without
//! reading its memory or freeing its pointer: the plugin sees what the call would have
//! given it.

use wasmtime::component::__internal::{InterfaceType, LowerContext, bad_type_info};
use wasmtime::component::{ComponentType, Lower};

/// What one plugin sees of one sighting: the WIT record `sighting` (plugins/wit/plugin.wit),
/// borrowing the host's strings. Type-checked against the plugin's own view of the record
/// when its functions are looked up, like the bindings' type.
#[derive(ComponentType, Clone, Copy, Debug, PartialEq)]
#[component(record)]
pub struct SightingView<'a> {
    pub device: u64,
    pub epoch: u32,
    #[component(name = "time-ms")]
    pub time_ms: u64,
    pub randomized: bool,
    #[component(name = "signal-dbm")]
    pub signal_dbm: Option<i8>,
    #[component(name = "freq-mhz")]
    pub freq_mhz: Option<u16>,
    pub seq: Option<u16>,
    #[component(name = "ie-signature")]
    pub ie_signature: Option<u64>,
    #[component(name = "consent-token")]
    pub consent_token: Option<&'a str>,
    pub tags: &'a [String],
}

// The record's layout in a 32-bit linear memory (canonical ABI): each field at the next
// multiple of its alignment; an option is a one-byte discriminant, then its payload at the
// payload's alignment. `the_layout_is_the_canonical_abis` checks these against wasmtime.
const DEVICE: usize = 0;
const EPOCH: usize = 8;
const TIME: usize = 16;
const RANDOMIZED: usize = 24;
const SIGNAL: usize = 25;
const FREQ: usize = 28;
const SEQ: usize = 32;
const SIGNATURE: usize = 40;
const CONSENT: usize = 56;
const TAGS: usize = 68;
const SIZE: usize = 80;
/// The pointer of an empty tag list: `cabi_realloc`'s answer to a request for 0 bytes at
/// the alignment of a string (see the module's comment).
const EMPTY_LIST: u32 = <String as ComponentType>::ALIGN32;

impl SightingView<'_> {
    /// The whole record, as if it had no consent token and no tags.
    fn record(&self) -> [u8; SIZE] {
        let mut r = [0u8; SIZE];
        r[DEVICE..DEVICE + 8].copy_from_slice(&self.device.to_le_bytes());
        r[EPOCH..EPOCH + 4].copy_from_slice(&self.epoch.to_le_bytes());
        r[TIME..TIME + 8].copy_from_slice(&self.time_ms.to_le_bytes());
        r[RANDOMIZED] = u8::from(self.randomized);
        if let Some(dbm) = self.signal_dbm {
            r[SIGNAL] = 1;
            r[SIGNAL + 1] = dbm as u8;
        }
        if let Some(mhz) = self.freq_mhz {
            r[FREQ] = 1;
            r[FREQ + 2..FREQ + 4].copy_from_slice(&mhz.to_le_bytes());
        }
        if let Some(seq) = self.seq {
            r[SEQ] = 1;
            r[SEQ + 2..SEQ + 4].copy_from_slice(&seq.to_le_bytes());
        }
        if let Some(sig) = self.ie_signature {
            r[SIGNATURE] = 1;
            r[SIGNATURE + 8..SIGNATURE + 16].copy_from_slice(&sig.to_le_bytes());
        }
        // The consent token's discriminant stays 0 (none).
        r[TAGS..TAGS + 4].copy_from_slice(&EMPTY_LIST.to_le_bytes());
        r
    }
}

unsafe impl Lower for SightingView<'_> {
    fn linear_lower_to_flat<U>(
        &self,
        _: &mut LowerContext<'_, U>,
        _: InterfaceType,
        _: &mut std::mem::MaybeUninit<Self::Lower>,
    ) -> wasmtime::Result<()> {
        // The interface passes sightings only in lists, which live in memory.
        Err(wasmtime::Error::msg("a sighting is passed only in a list"))
    }

    fn linear_lower_to_memory<U>(
        &self,
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        offset: usize,
    ) -> wasmtime::Result<()> {
        Self::linear_store_list_to_memory(cx, ty, offset, std::slice::from_ref(self))
    }

    fn linear_store_list_to_memory<U>(
        cx: &mut LowerContext<'_, U>,
        ty: InterfaceType,
        offset: usize,
        items: &[Self],
    ) -> wasmtime::Result<()> {
        let fields = match ty {
            InterfaceType::Record(i) => &cx.types[i].fields,
            _ => bad_type_info(),
        };
        let (consent_ty, tags_ty) = (fields[8].ty, fields[9].ty);
        let plain = |s: &Self| s.consent_token.is_none() && s.tags.is_empty();
        let mut i = 0;
        while i < items.len() {
            // A run of records with nothing nested, what almost every batch is: memory is
            // looked up once for the run (a look costs more than writing a record).
            let run = items[i..].iter().take_while(|s| plain(s)).count();
            if run > 0 {
                let start = offset + i * SIZE;
                let memory = &mut cx.as_slice_mut()[start..start + run * SIZE];
                for (s, at) in items[i..i + run].iter().zip(memory.chunks_exact_mut(SIZE)) {
                    at.copy_from_slice(&s.record());
                }
                i += run;
                continue;
            }
            let (s, at) = (&items[i], offset + i * SIZE);
            i += 1;
            let record = s.record();
            // The nested data first, in field order: allocating in the plugin may grow (move)
            // its memory. wasmtime writes each one's place in the record itself.
            let consent = s.consent_token.is_some();
            if consent {
                s.consent_token
                    .linear_lower_to_memory(cx, consent_ty, at + CONSENT)?;
            }
            if !s.tags.is_empty() {
                s.tags.linear_lower_to_memory(cx, tags_ty, at + TAGS)?;
            }
            let memory = &mut cx.as_slice_mut()[at..at + SIZE];
            memory[..CONSENT].copy_from_slice(&record[..CONSENT]);
            if !consent {
                memory[CONSENT] = 0;
            }
            if s.tags.is_empty() {
                memory[TAGS..TAGS + 8].copy_from_slice(&record[TAGS..TAGS + 8]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_canonical_abis() {
        let abis = [
            <u64 as ComponentType>::ABI,
            <u32 as ComponentType>::ABI,
            <u64 as ComponentType>::ABI,
            <bool as ComponentType>::ABI,
            <Option<i8> as ComponentType>::ABI,
            <Option<u16> as ComponentType>::ABI,
            <Option<u16> as ComponentType>::ABI,
            <Option<u64> as ComponentType>::ABI,
            <Option<&str> as ComponentType>::ABI,
            <&[String] as ComponentType>::ABI,
        ];
        let mut offset = 0;
        let offsets: Vec<usize> = abis
            .iter()
            .map(|abi| abi.next_field32_size(&mut offset))
            .collect();
        assert_eq!(
            offsets,
            [
                DEVICE, EPOCH, TIME, RANDOMIZED, SIGNAL, FREQ, SEQ, SIGNATURE, CONSENT, TAGS
            ]
        );
        assert_eq!(<SightingView as ComponentType>::SIZE32, SIZE);
        // Option payloads sit at their own alignment after the discriminant.
        assert_eq!(<i8 as ComponentType>::ALIGN32, 1);
        assert_eq!(<u16 as ComponentType>::ALIGN32, 2);
        assert_eq!(<u64 as ComponentType>::ALIGN32, 8);
    }
}
