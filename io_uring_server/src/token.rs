//! Support code, not the model: how a submission names what it is about. io_uring hands back
//! each submission's 64-bit `user_data` untouched in its completion; here it carries the
//! operation and the connection's slot and generation (see `conn.rs`, "Slots with
//! generations").

/// The operation a completion reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Accept = 0,
    Recv = 1,
    Send = 2,
    Cancel = 3,
}

/// The `user_data` of a submission, returned untouched in its completion: bits 0–7 the
/// operation, 8–31 the connection's slot, 32–63 the slot's generation.
pub fn token(op: Op, slot: u32, generation: u32) -> u64 {
    u64::from(generation) << 32 | u64::from(slot) << 8 | op as u64
}

/// The operation, slot and generation of a `user_data`.
pub fn untoken(user_data: u64) -> (Op, u32, u32) {
    let slot = (user_data >> 8) as u32 & 0xff_ffff;
    let generation = (user_data >> 32) as u32;
    // Bits 2–7 are zero in every token: `token` writes an `Op`, 0 to 3.
    let op = [Op::Accept, Op::Recv, Op::Send, Op::Cancel][(user_data & 0b11) as usize];
    (op, slot, generation)
}
