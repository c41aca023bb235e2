//! A fixed-capacity batch of frame tokens, allocated once per worker.

use super::{Frame, BATCH_SIZE};

/// Up to `capacity` [`Frame`]s. Its storage is allocated once, when made;
/// it never grows, so the hot path does not allocate.
#[derive(Debug)]
pub struct FrameBatch {
    frames: Vec<Frame>,
    cap: usize,
}

impl Default for FrameBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameBatch {
    /// A batch of [`BATCH_SIZE`] frames.
    pub fn new() -> Self {
        Self::with_capacity(BATCH_SIZE)
    }

    /// A batch of `cap` frames.
    pub fn with_capacity(cap: usize) -> Self {
        FrameBatch {
            frames: Vec::with_capacity(cap),
            cap,
        }
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Most frames it holds.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Frames it can still take.
    pub fn remaining(&self) -> usize {
        self.cap - self.frames.len()
    }

    /// Appends a frame; gives it back when full.
    pub fn push(&mut self, frame: Frame) -> Result<(), Frame> {
        if self.frames.len() == self.cap {
            return Err(frame);
        }
        self.frames.push(frame);
        Ok(())
    }

    /// Takes the last frame.
    pub fn pop(&mut self) -> Option<Frame> {
        self.frames.pop()
    }

    /// The frames, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Frame> {
        self.frames.iter()
    }

    /// The frames, in order, to change (see [`super::Umem::data_mut`]).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Frame> {
        self.frames.iter_mut()
    }

    /// Takes every frame out, in order.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Frame> {
        self.frames.drain(..)
    }

    /// Takes the first `n` frames (or all, if fewer) out, in order.
    pub fn drain_front(&mut self, n: usize) -> std::vec::Drain<'_, Frame> {
        let n = n.min(self.frames.len());
        self.frames.drain(..n)
    }
}
