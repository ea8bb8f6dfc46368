//! What calls for a pass: sent by the source timers and the watches, read by the pass
//! trigger. A module of its own so that the watches and the passes need not know each other.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// A source has stored fresh credentials.
    Refreshed,
    /// A watch lost track and listed again: a deletion missed meanwhile is in no event.
    Relisted,
}
