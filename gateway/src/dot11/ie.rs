use std::fmt;

/// Tag number of the SSID element.
pub const TAG_SSID: u8 = 0;

/// One information element: a tag number and its body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Element<'a> {
    pub tag: u8,
    pub body: &'a [u8],
}

// PRIVACY: bodies carry the SSIDs a phone is looking for (often the owner's home network), so
// debug output shows only their size.
impl fmt::Debug for Element<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Element")
            .field("tag", &self.tag)
            .field("len", &self.body.len())
            .finish()
    }
}

/// Walks the tagged parameters of a management frame body in order.
///
/// Stops at the first element whose header or body runs past the end of the buffer: nothing
/// after a truncated element can be located, and a half element must not pass for a whole one.
#[derive(Clone)]
pub struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    pub fn new(tagged: &'a [u8]) -> Self {
        Elements { rest: tagged }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        let (&[tag, len], after_header) = self.rest.split_first_chunk::<2>()?;
        let Some((body, after_body)) = after_header.split_at_checked(usize::from(len)) else {
            // Fuse: a later call must not resume inside the truncated element.
            self.rest = &[];
            return None;
        };
        self.rest = after_body;
        Some(Element { tag, body })
    }
}

#[cfg(test)]
mod tests {
    use super::{Element, Elements};

    #[test]
    fn elements_come_out_in_order_with_their_bodies() {
        let tagged = [0, 4, b'o', b'm', b'u', b's', 1, 1, 0x82, 221, 0];
        let elements: Vec<_> = Elements::new(&tagged).collect();
        assert_eq!(
            elements,
            [
                Element {
                    tag: 0,
                    body: b"omus"
                },
                Element {
                    tag: 1,
                    body: &[0x82]
                },
                Element {
                    tag: 221,
                    body: &[]
                },
            ]
        );
    }

    #[test]
    fn an_element_longer_than_the_buffer_ends_the_walk() {
        let tagged = [0, 0, 1, 8, 0x82, 0x84];
        let tags: Vec<u8> = Elements::new(&tagged).map(|e| e.tag).collect();
        assert_eq!(tags, [0]);
    }

    #[test]
    fn a_lone_trailing_tag_byte_is_not_an_element() {
        let tagged = [0, 0, 50];
        let tags: Vec<u8> = Elements::new(&tagged).map(|e| e.tag).collect();
        assert_eq!(tags, [0]);
    }

    #[test]
    fn the_walk_stays_finished_after_a_truncated_element() {
        let mut elements = Elements::new(&[1, 200, 0, 0]);
        assert_eq!(elements.next(), None);
        assert_eq!(elements.next(), None);
    }

    #[test]
    fn debug_output_hides_element_bodies() {
        let element = Element {
            tag: 0,
            body: b"HomeNetwork",
        };
        assert_eq!(format!("{element:?}"), "Element { tag: 0, len: 11 }");
    }
}
