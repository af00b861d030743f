use std::fmt;

/// A raw MAC address as seen on the air.
///
/// PRIVACY: a MAC address identifies a person's device, so this type deliberately offers no way
/// to print or serialise it. `Debug` is redacted (so a stray `{:?}` in a log cannot leak one) and
/// the only way to the bytes is [`MacAddr::octets`], which the privacy gate uses to hash them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MacAddr([u8; 6]);

impl MacAddr {
    pub const fn new(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Group (multicast or broadcast) address: the I/G bit of the first octet. A frame's
    /// transmitter can never legitimately be one.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Locally administered: the U/L bit of the first octet. Phones set it on the randomized
    /// addresses they probe with, but some devices use such an address as their real one.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacAddr(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::MacAddr;

    #[test]
    fn debug_output_never_contains_the_address() {
        let mac = MacAddr::new([0xde, 0xad, 0xbe, 0xef, 0x12, 0x34]);
        let printed = format!("{mac:?} {mac:#?}");
        assert_eq!(printed, "MacAddr(<redacted>) MacAddr(<redacted>)");
    }

    #[test]
    fn octets_return_the_bytes_given_to_new() {
        let bytes = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
        assert_eq!(MacAddr::new(bytes).octets(), bytes);
    }

    #[test]
    fn broadcast_and_group_addresses_are_multicast() {
        assert!(MacAddr::new([0xff; 6]).is_multicast());
        assert!(MacAddr::new([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(!MacAddr::new([0x00, 0x46, 0x6d, 0x98, 0x8b, 0x32]).is_multicast());
    }

    #[test]
    fn randomized_addresses_are_locally_administered() {
        assert!(MacAddr::new([0x0e, 0xd6, 0xb5, 0x16, 0xa4, 0x3e]).is_locally_administered());
        assert!(!MacAddr::new([0xdc, 0xfb, 0x48, 0x68, 0xbe, 0xe4]).is_locally_administered());
    }
}
