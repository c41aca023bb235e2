//! A cursor over the fuzzer's bytes for targets that build structured
//! input (a sequence of operations, a packet with chosen fields).
//!
//! Reads never fail: past the end they yield zeros and empty slices, so
//! every byte string is a valid program and the fuzzer never wastes runs
//! on inputs the harness refuses. A hand-rolled cursor rather than the
//! `arbitrary` crate keeps the main workspace free of fuzz-only
//! dependencies, and the layout stays obvious when writing seeds.

/// Reads numbers and slices off the front of the input.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (u64::from(self.u32()) << 32) | u64::from(self.u32())
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A slice prefixed by its 16-bit big-endian length.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes what [`Input`] reads, for seed generators.
#[derive(Debug, Clone, Default)]
pub struct Builder {
    pub out: Vec<u8>,
}

impl Builder {
    pub fn new() -> Self {
        Builder::default()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }

    /// A 16-bit length, then the bytes (what [`Input::chunk`] reads).
    /// Longer slices are cut to 65535 bytes.
    pub fn chunk(&mut self, v: &[u8]) -> &mut Self {
        let v = &v[..v.len().min(usize::from(u16::MAX))];
        self.u16(v.len() as u16);
        self.bytes(v)
    }

    pub fn build(&self) -> Vec<u8> {
        self.out.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_zero() {
        let mut i = Input::new(&[1, 2, 3]);
        assert_eq!(i.u16(), 0x0102);
        assert_eq!(i.u32(), 0x0300_0000);
        assert_eq!(i.chunk(), &[] as &[u8]);
        assert!(i.is_empty());
    }

    #[test]
    fn builder_and_input_agree() {
        let b = Builder::new()
            .u8(7)
            .u16(0x1234)
            .u64(9)
            .chunk(b"abc")
            .bytes(b"rest")
            .build();
        let mut i = Input::new(&b);
        assert_eq!(i.u8(), 7);
        assert_eq!(i.u16(), 0x1234);
        assert_eq!(i.u64(), 9);
        assert_eq!(i.chunk(), b"abc");
        assert_eq!(i.rest(), b"rest");
    }
}
