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

/// The record in little-endian words: no field crosses one.
const WORDS: usize = SIZE / 8;

impl SightingView<'_> {
    /// The whole record as words, as if it had no consent token and no tags. Words, not a
    /// byte array filled by slices: at the router's `opt-level = "s"` each slice copy was a
    /// call to `memmove`, ~4 % of the plugin thread on the store day.
    fn words(&self) -> [u64; WORDS] {
        let mut w = [0u64; WORDS];
        let mut put = |at: usize, value: u64| w[at / 8] |= value << (8 * (at % 8));
        put(DEVICE, self.device);
        put(EPOCH, self.epoch.into());
        put(TIME, self.time_ms);
        put(RANDOMIZED, self.randomized.into());
        if let Some(dbm) = self.signal_dbm {
            put(SIGNAL, 1);
            put(SIGNAL + 1, (dbm as u8).into());
        }
        if let Some(mhz) = self.freq_mhz {
            put(FREQ, 1);
            put(FREQ + 2, mhz.into());
        }
        if let Some(seq) = self.seq {
            put(SEQ, 1);
            put(SEQ + 2, seq.into());
        }
        if let Some(sig) = self.ie_signature {
            put(SIGNATURE, 1);
            put(SIGNATURE + 8, sig);
        }
        // The consent token's discriminant stays 0 (none).
        put(TAGS, EMPTY_LIST.into());
        w
    }

    fn write(&self, to: &mut [u8; SIZE]) {
        for (bytes, word) in to.as_chunks_mut::<8>().0.iter_mut().zip(self.words()) {
            *bytes = word.to_le_bytes();
        }
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
                for (s, at) in items[i..i + run]
                    .iter()
                    .zip(memory.as_chunks_mut::<SIZE>().0)
                {
                    s.write(at);
                }
                i += run;
                continue;
            }
            let (s, at) = (&items[i], offset + i * SIZE);
            i += 1;
            let mut record = [0u8; SIZE];
            s.write(&mut record);
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

    /// Every field at its offset, read back byte by byte; a field crossing a word would lose
    /// its high bytes.
    #[test]
    fn a_record_holds_each_field_at_its_offset() {
        let view = SightingView {
            device: 0x0102_0304_0506_0708,
            epoch: 0x1122_3344,
            time_ms: 0x8877_6655_4433_2211,
            randomized: true,
            signal_dbm: Some(-61),
            freq_mhz: Some(0x1985),
            seq: Some(0x0abc),
            ie_signature: Some(0xfedc_ba98_7654_3210),
            consent_token: None,
            tags: &[],
        };
        let mut r = [0xaa; SIZE];
        view.write(&mut r);
        fn read(r: &[u8; SIZE], at: usize, n: usize) -> u64 {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&r[at..at + n]);
            u64::from_le_bytes(b)
        }
        let at = |at: usize, n: usize| read(&r, at, n);
        assert_eq!(at(DEVICE, 8), view.device);
        assert_eq!(at(EPOCH, 4), 0x1122_3344);
        assert_eq!(at(TIME, 8), view.time_ms);
        assert_eq!(at(RANDOMIZED, 1), 1);
        assert_eq!(
            (at(SIGNAL, 1), at(SIGNAL + 1, 1)),
            (1, u64::from(-61i8 as u8))
        );
        assert_eq!((at(FREQ, 1), at(FREQ + 2, 2)), (1, 0x1985));
        assert_eq!((at(SEQ, 1), at(SEQ + 2, 2)), (1, 0x0abc));
        assert_eq!(
            (at(SIGNATURE, 1), at(SIGNATURE + 8, 8)),
            (1, 0xfedc_ba98_7654_3210)
        );
        assert_eq!(at(CONSENT, 1), 0);
        assert_eq!((at(TAGS, 4), at(TAGS + 4, 4)), (u64::from(EMPTY_LIST), 0));
        // Padding is zeroed, not left as it was.
        assert_eq!(
            (at(EPOCH + 4, 4), at(SIGNAL + 2, 1), at(SIGNATURE + 1, 7)),
            (0, 0, 0)
        );
        let empty = SightingView {
            signal_dbm: None,
            freq_mhz: None,
            seq: None,
            ie_signature: None,
            randomized: false,
            ..view
        };
        empty.write(&mut r);
        let at = |at: usize, n: usize| read(&r, at, n);
        assert_eq!(
            (at(SIGNAL, 2), at(FREQ, 4), at(SEQ, 4), at(SIGNATURE, 8)),
            (0, 0, 0, 0)
        );
        assert_eq!(at(RANDOMIZED, 1), 0);
    }
}
