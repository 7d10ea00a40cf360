//! AMX in software, for the tests on CPUs without it: the tile instructions fault there (SIGILL),
//! and this handler decodes the faulting instruction, does what Intel's SDM says it does on this
//! thread's emulated tiles, and steps over it. So the tests run the AMX kernel's own machine code
//! (its registers, addresses, strides and operand order), not a model of it.
//!
//! It knows the instructions `super::amx` emits: LDTILECFG, TILERELEASE, TILEZERO, TILELOADD,
//! TILESTORED and TDPBF16PS (VEX map 0F38, opcodes 49, 4B and 5C). Anything else it cannot decode
//! gets the default SIGILL (the process dies, as it would have). Where the SDM says the CPU
//! faults, it faults too (#GP as SIGSEGV, #UD as SIGILL), so that a kernel the emulator passes
//! does not fault on AMX: a configuration LDTILECFG refuses (a palette other than 0 or 1, reserved
//! bytes, tiles over 16 rows or 64 bytes, or with rows and no bytes), a tile instruction before a
//! configuration or on a tile it left empty, and a `tdpbf16ps` whose tiles are not three
//! different ones of matching shapes.

use std::cell::{Cell, UnsafeCell};
use std::sync::Once;

use super::from_bf16;

/// One thread's tile state: the configuration's bytes, and eight tiles of up to 16 rows of 64 bytes.
struct Tiles {
    config: [u8; 64],
    data: [[[u8; 64]; 16]; 8],
}

/// A fault the CPU would raise: the signal Linux delivers for it, and what the emulator says.
struct Fault(libc::c_int, &'static [u8]);

/// #GP, which Linux delivers as SIGSEGV.
fn general_protection(message: &'static [u8]) -> Fault {
    Fault(libc::SIGSEGV, message)
}

/// #UD, delivered as SIGILL.
fn undefined(message: &'static [u8]) -> Fault {
    Fault(libc::SIGILL, message)
}

/// The SDM's checks of a 64-byte tile configuration (palette 1: 8 tiles of up to 16 rows of up
/// to 64 bytes); palette 0 is the init state.
fn check_config(config: &[u8; 64]) -> Result<(), Fault> {
    if config[0] > 1 {
        return Err(general_protection(b"AMX emulator: ldtilecfg of a palette other than 0 or 1 (#GP)\n"));
    }
    let mut reserved = config[2..16].iter().chain(&config[32..48]).chain(&config[56..64]);
    if reserved.any(|&byte| byte != 0) {
        return Err(general_protection(b"AMX emulator: ldtilecfg with reserved bytes set (#GP)\n"));
    }
    for tile in 0..8 {
        let (rows, bytes) = (rows_in(config, tile), bytes_in(config, tile));
        if rows > 16 || bytes > 64 {
            return Err(general_protection(b"AMX emulator: ldtilecfg of a tile over 16 rows or 64 bytes (#GP)\n"));
        }
        if (rows == 0) != (bytes == 0) {
            return Err(general_protection(b"AMX emulator: ldtilecfg of a tile with rows and no bytes, or bytes and no rows (#GP)\n"));
        }
    }
    Ok(())
}

/// A configuration's rows of `tile`.
fn rows_in(config: &[u8; 64], tile: usize) -> usize {
    config[48 + tile] as usize
}

/// A configuration's bytes a row of `tile` (a little-endian u16).
fn bytes_in(config: &[u8; 64], tile: usize) -> usize {
    u16::from_le_bytes([config[16 + 2 * tile], config[17 + 2 * tile]]) as usize
}

impl Tiles {
    fn configured(&self) -> bool {
        self.config[0] != 0
    }

    /// A tile instruction's #UD: tiles not configured, or this one left empty.
    fn usable(&self, tile: usize) -> Result<(), Fault> {
        if !self.configured() {
            return Err(undefined(b"AMX emulator: a tile instruction before ldtilecfg (#UD)\n"));
        }
        if self.rows(tile) == 0 {
            return Err(undefined(b"AMX emulator: a tile instruction on a tile the configuration left empty (#UD)\n"));
        }
        Ok(())
    }

    fn rows(&self, tile: usize) -> usize {
        rows_in(&self.config, tile)
    }

    fn bytes(&self, tile: usize) -> usize {
        bytes_in(&self.config, tile)
    }

    fn f32_at(&self, tile: usize, row: usize, lane: usize) -> f32 {
        f32::from_le_bytes(self.data[tile][row][4 * lane..4 * lane + 4].try_into().expect("4 bytes"))
    }

    fn bf16_at(&self, tile: usize, row: usize, index: usize) -> f32 {
        let h = u16::from_le_bytes([self.data[tile][row][2 * index], self.data[tile][row][2 * index + 1]]);
        // Inputs: subnormals are zeros (DAZ).
        let x = from_bf16(h);
        if x.is_subnormal() { 0.0f32.copysign(x) } else { x }
    }
}

thread_local! {
    // Const-initialised without a destructor: a plain thread-local the handler may touch.
    static TILES: UnsafeCell<Tiles> = const { UnsafeCell::new(Tiles { config: [0; 64], data: [[[0; 64]; 16]; 8] }) };
}

thread_local! {
    /// How many `tdpbf16ps` the emulator has done on this thread: the tests check the AMX kernel ran.
    static PRODUCTS: Cell<u64> = const { Cell::new(0) };
}

pub(super) fn products() -> u64 {
    PRODUCTS.with(Cell::get)
}

/// Installs the handler, once per process.
pub(super) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction with a handler and SA_SIGINFO is a valid argument.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigill as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGILL, &action, std::ptr::null_mut()), 0, "installing the AMX emulator");
        }
    });
}

/// What a decoded instruction does.
#[derive(Debug)]
enum Instruction {
    LoadConfig(u64),
    Release,
    Zero(usize),
    Load { tile: usize, address: u64, stride: u64 },
    Store { tile: usize, address: u64, stride: u64 },
    DotBf16 { dst: usize, a: usize, b: usize },
}

/// The general registers by x86 number (RAX = 0 … R15 = 15) in the signal's saved context.
fn register(gregs: &[libc::greg_t; 23], number: usize) -> u64 {
    const BY_NUMBER: [libc::c_int; 16] = [
        libc::REG_RAX,
        libc::REG_RCX,
        libc::REG_RDX,
        libc::REG_RBX,
        libc::REG_RSP,
        libc::REG_RBP,
        libc::REG_RSI,
        libc::REG_RDI,
        libc::REG_R8,
        libc::REG_R9,
        libc::REG_R10,
        libc::REG_R11,
        libc::REG_R12,
        libc::REG_R13,
        libc::REG_R14,
        libc::REG_R15,
    ];
    gregs[BY_NUMBER[number] as usize] as u64
}

/// The instruction at `code` and its length, or None if it is not one of ours.
///
/// # Safety
/// `code` points at an instruction in mapped memory (up to 15 bytes readable).
unsafe fn decode(code: *const u8, gregs: &[libc::greg_t; 23]) -> Option<(Instruction, usize)> {
    // SAFETY: as the caller promises.
    let byte = |i: usize| unsafe { *code.add(i) };
    // Three-byte VEX, map 0F38, W0, L0.
    if byte(0) != 0xC4 || byte(1) & 0x1F != 0x02 || byte(2) & 0x84 != 0 {
        return None;
    }
    let (r, x, b) = (byte(1) & 0x80 == 0, byte(1) & 0x40 == 0, byte(1) & 0x20 == 0);
    let vvvv = (!byte(2) >> 3) as usize & 0xF;
    let pp = byte(2) & 3;
    let (opcode, modrm) = (byte(3), byte(4));
    let (mode, reg, rm) = (modrm >> 6, (modrm >> 3) as usize & 7, modrm as usize & 7);
    if r || (mode == 3 && b) {
        return None; // tile numbers are 0..8
    }
    if mode == 3 {
        return match (opcode, pp, modrm) {
            (0x49, 0, 0xC0) if vvvv == 0 => Some((Instruction::Release, 5)),
            (0x49, 3, _) if rm == 0 && vvvv == 0 => Some((Instruction::Zero(reg), 5)),
            (0x5C, 2, _) if vvvv < 8 => Some((Instruction::DotBf16 { dst: reg, a: rm, b: vvvv }, 5)),
            _ => None,
        };
    }
    // A memory operand: ModRM, SIB, displacement.
    let mut len = 5;
    let mut index = None;
    let mut address;
    if rm == 4 {
        let sib = byte(5);
        len += 1;
        let (scale, idx, base) = (sib >> 6, (sib >> 3) as usize & 7 | usize::from(x) << 3, sib as usize & 7 | usize::from(b) << 3);
        if idx != 4 {
            index = Some(register(gregs, idx) << scale);
        }
        if base & 7 == 5 && mode == 0 {
            address = i32::from_le_bytes([byte(len), byte(len + 1), byte(len + 2), byte(len + 3)]) as i64 as u64;
            len += 4;
        } else {
            address = register(gregs, base);
        }
    } else if rm == 5 && mode == 0 {
        return None; // RIP-relative: not emitted by the kernel
    } else {
        address = register(gregs, rm | usize::from(b) << 3);
    }
    match mode {
        1 => {
            address = address.wrapping_add(byte(len) as i8 as i64 as u64);
            len += 1;
        }
        2 => {
            address = address.wrapping_add(i32::from_le_bytes([byte(len), byte(len + 1), byte(len + 2), byte(len + 3)]) as i64 as u64);
            len += 4;
        }
        _ => {}
    }
    if vvvv != 0 {
        return None;
    }
    // The tile loads and stores take their row stride from the index register (sibmem).
    let stride = index.unwrap_or(0);
    let instruction = match (opcode, pp) {
        (0x49, 0) if reg == 0 && index.is_none() => Instruction::LoadConfig(address),
        (0x4B, 3) | (0x4B, 1) => Instruction::Load { tile: reg, address, stride },
        (0x4B, 2) => Instruction::Store { tile: reg, address, stride },
        _ => return None,
    };
    Some((instruction, len))
}

/// Does `instruction` on this thread's tiles.
///
/// # Safety
/// Its addresses are the faulting code's, which AMX would have read or written.
unsafe fn execute(instruction: &Instruction, tiles: &mut Tiles) -> Result<(), Fault> {
    match *instruction {
        Instruction::LoadConfig(address) => {
            // SAFETY: 64 bytes the instruction reads.
            let config = unsafe { *(address as *const [u8; 64]) };
            check_config(&config)?;
            // Palette 0 is the init state: no tile configured.
            tiles.config = if config[0] == 0 { [0; 64] } else { config };
            tiles.data = [[[0; 64]; 16]; 8];
        }
        Instruction::Release => {
            tiles.config = [0; 64];
            tiles.data = [[[0; 64]; 16]; 8];
        }
        Instruction::Zero(tile) => {
            tiles.usable(tile)?;
            tiles.data[tile] = [[0; 64]; 16];
        }
        Instruction::Load { tile, address, stride } => {
            tiles.usable(tile)?;
            let (rows, bytes) = (tiles.rows(tile), tiles.bytes(tile));
            tiles.data[tile] = [[0; 64]; 16];
            for row in 0..rows {
                let from = address.wrapping_add(row as u64 * stride) as *const u8;
                // SAFETY: the row's bytes the instruction reads.
                unsafe { std::ptr::copy_nonoverlapping(from, tiles.data[tile][row].as_mut_ptr(), bytes) };
            }
        }
        Instruction::Store { tile, address, stride } => {
            tiles.usable(tile)?;
            let (rows, bytes) = (tiles.rows(tile), tiles.bytes(tile));
            for row in 0..rows {
                let to = address.wrapping_add(row as u64 * stride) as *mut u8;
                // SAFETY: the row's bytes the instruction writes.
                unsafe { std::ptr::copy_nonoverlapping(tiles.data[tile][row].as_ptr(), to, bytes) };
            }
        }
        Instruction::DotBf16 { dst, a, b } => {
            for tile in [dst, a, b] {
                tiles.usable(tile)?;
            }
            if dst == a || dst == b || a == b {
                return Err(undefined(b"AMX emulator: tdpbf16ps on a tile twice (#UD)\n"));
            }
            PRODUCTS.with(|count| count.set(count.get() + 1));
            // The SDM's pseudo-code: per output, the even then the odd product of each pair added
            // in f32 (each product of two bf16 is exact in f32); outputs' subnormals flushed.
            let (rows, columns, pairs) = (tiles.rows(dst), tiles.bytes(dst) / 4, tiles.bytes(a) / 4);
            let whole_pairs = tiles.bytes(a).is_multiple_of(4) && tiles.bytes(dst).is_multiple_of(4);
            if !whole_pairs || tiles.rows(a) != rows || tiles.rows(b) != pairs || tiles.bytes(b) != tiles.bytes(dst) {
                return Err(undefined(b"AMX emulator: tdpbf16ps on tiles of mismatched shapes (#UD)\n"));
            }
            for m in 0..rows {
                let mut row = [0.0f32; 16];
                for (n, out) in row.iter_mut().enumerate().take(columns) {
                    let mut sum = tiles.f32_at(dst, m, n);
                    for k in 0..pairs {
                        sum += tiles.bf16_at(a, m, 2 * k) * tiles.bf16_at(b, k, 2 * n);
                        sum += tiles.bf16_at(a, m, 2 * k + 1) * tiles.bf16_at(b, k, 2 * n + 1);
                    }
                    *out = if sum.is_subnormal() { 0.0f32.copysign(sum) } else { sum };
                }
                let bytes = &mut tiles.data[dst][m];
                bytes.fill(0);
                for (n, value) in row.iter().enumerate().take(columns) {
                    bytes[4 * n..4 * n + 4].copy_from_slice(&value.to_le_bytes());
                }
            }
        }
    }
    Ok(())
}

/// Says `message` and dies by `signal` (what the fault would have done on AMX): nothing in a
/// signal handler may unwind.
fn fail(signal: libc::c_int, message: &[u8]) -> ! {
    // SAFETY: write, signal, pthread_sigmask and raise are async-signal-safe; the signal is
    // unblocked (SIGILL is, inside its own handler) so that it ends the process here.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(signal);
        libc::abort()
    }
}

extern "C" fn on_sigill(_signal: libc::c_int, _info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes the interrupted context; its RIP points at the faulting instruction.
    unsafe {
        let context = &mut *context.cast::<libc::ucontext_t>();
        let gregs = &mut context.uc_mcontext.gregs;
        let rip = gregs[libc::REG_RIP as usize];
        let Some((instruction, len)) = decode(rip as *const u8, gregs) else {
            fail(libc::SIGILL, b"AMX emulator: an illegal instruction it does not know\n");
        };
        if let Err(Fault(signal, message)) = TILES.with(|tiles| execute(&instruction, &mut *tiles.get())) {
            fail(signal, message);
        }
        gregs[libc::REG_RIP as usize] = rip + len as i64;
    }
}

/// The faults the emulator raises are the CPU's: on a CPU with AMX the same instructions run
/// natively, so these check the emulator's rules against the hardware. Each runs in a child
/// process, which the fault ends.
#[cfg(test)]
mod tests {
    use std::arch::asm;
    use std::time::Duration;

    use super::super::amx;
    use super::super::child::{Outcome, in_child};

    /// The kernel's configuration (palette 1, tiles 0–7 of 16 rows of 64 bytes), then `change` applied.
    fn config(change: impl FnOnce(&mut [u8; 64])) -> [u8; 64] {
        let mut bytes = amx::CONFIG_BYTES;
        change(&mut bytes);
        bytes
    }

    /// # Safety
    /// AMX runs here (or is emulated).
    unsafe fn load(config: &[u8; 64]) {
        // SAFETY: 64 readable bytes; as the caller promises.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config.as_ptr(), options(nostack, readonly)) };
    }

    /// How `instructions` end in a child whose tiles start released.
    fn ending(instructions: impl FnOnce()) -> Outcome {
        // SAFETY: the child runs tile instructions on its own thread only; AMX runs here (the
        // callers check) or the emulator's handler, inherited, stands in.
        unsafe {
            in_child(
                || {
                    amx::release();
                    instructions();
                    true
                },
                Duration::from_secs(20),
            )
        }
    }

    /// Whether the tile instructions run here, natively or emulated (installing the emulator).
    fn tiles_run_here() -> bool {
        match amx::state() {
            amx::State::Used => true,
            amx::State::Absent if super::super::avx512_bf16() => {
                super::install();
                true
            }
            state => {
                eprintln!("skipped: the tile instructions do not run here ({state:?})");
                false
            }
        }
    }

    #[test]
    fn ldtilecfg_refuses_what_the_cpu_refuses() {
        if !tiles_run_here() {
            return;
        }
        let gp = Outcome::Signalled(libc::SIGSEGV);
        let refused: [(&str, [u8; 64]); 4] = [
            ("palette 2", config(|c| c[0] = 2)),
            ("a reserved byte", config(|c| c[5] = 1)),
            ("17 rows", config(|c| c[48 + 3] = 17)),
            ("68 bytes a row", config(|c| c[16 + 2 * 5] = 68)),
        ];
        for (what, bytes) in refused {
            // SAFETY: `tiles_run_here`.
            assert_eq!(ending(|| unsafe { load(&bytes) }), gp, "{what}");
        }
        let good = config(|_| {});
        // SAFETY: as above.
        assert_eq!(ending(|| unsafe { load(&good) }), Outcome::Returned(true), "the kernel's configuration");
        let init = [0u8; 64];
        // SAFETY: as above.
        assert_eq!(ending(|| unsafe { load(&init) }), Outcome::Returned(true), "palette 0");
    }

    #[test]
    fn tile_instructions_need_a_configuration_and_three_tiles() {
        if !tiles_run_here() {
            return;
        }
        let ud = Outcome::Signalled(libc::SIGILL);
        // SAFETY: `tiles_run_here`.
        assert_eq!(ending(|| unsafe { asm!("tilezero tmm0", options(nostack, nomem)) }), ud, "before ldtilecfg");
        let good = config(|_| {});
        let product = |instruction: fn()| {
            ending(|| {
                // SAFETY: `tiles_run_here`.
                unsafe { load(&good) };
                instruction();
            })
        };
        // The assembler refuses a tile twice, so those are spelled out: VEX C4 E2 4A (map 0F38,
        // B = tmm6, F3), opcode 5C, ModRM 11 C A. The first is `tdpbf16ps tmm0, tmm4, tmm6`
        // spelled so, against the assembler's, to check the spelling.
        // SAFETY (all four): the tiles are configured just before.
        assert_eq!(product(|| unsafe { asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem)) }), Outcome::Returned(true));
        assert_eq!(product(|| unsafe { asm!(".byte 0xc4, 0xe2, 0x4a, 0x5c, 0xc4", options(nostack, nomem)) }), Outcome::Returned(true));
        assert_eq!(product(|| unsafe { asm!(".byte 0xc4, 0xe2, 0x4a, 0x5c, 0xc0", options(nostack, nomem)) }), ud, "C is A");
        assert_eq!(product(|| unsafe { asm!(".byte 0xc4, 0xe2, 0x4a, 0x5c, 0xc6", options(nostack, nomem)) }), ud, "A is B");
    }

    /// Rules the emulator keeps stricter than this test can say the CPU is (it runs only where
    /// the CPU lacks AMX): the kernel never does these.
    #[test]
    fn the_emulator_refuses_odd_shapes() {
        if amx::state() != amx::State::Absent || !tiles_run_here() {
            return;
        }
        let gp = Outcome::Signalled(libc::SIGSEGV);
        let rows_without_bytes = config(|c| c[16 + 2 * 2] = 0);
        // SAFETY: the emulator is installed (`tiles_run_here`).
        assert_eq!(ending(|| unsafe { load(&rows_without_bytes) }), gp);
        // A holds 8 pairs a row, B 16 rows: mismatched.
        let narrow_a = config(|c| c[16 + 2 * 4] = 32);
        let outcome = ending(|| unsafe {
            load(&narrow_a);
            asm!("tdpbf16ps tmm0, tmm4, tmm6", options(nostack, nomem));
        });
        assert_eq!(outcome, Outcome::Signalled(libc::SIGILL));
        // An empty tile.
        let empty = config(|c| {
            c[16 + 2 * 7] = 0;
            c[48 + 7] = 0;
        });
        let outcome = ending(|| unsafe {
            load(&empty);
            asm!("tilezero tmm7", options(nostack, nomem));
        });
        assert_eq!(outcome, Outcome::Signalled(libc::SIGILL));
    }
}
