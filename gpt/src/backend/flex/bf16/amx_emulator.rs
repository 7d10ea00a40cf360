//! AMX in software, for the tests on CPUs without it: the tile instructions fault there (SIGILL),
//! and this handler decodes the faulting instruction, does what Intel's SDM says it does on this
//! thread's emulated tiles, and steps over it. So the tests run the AMX kernel's own machine code
//! (its registers, addresses, strides and operand order), not a model of it.
//!
//! It knows the instructions `super::amx` emits: LDTILECFG, TILERELEASE, TILEZERO, TILELOADD,
//! TILESTORED and TDPBF16PS (VEX map 0F38, opcodes 49, 4B and 5C). Anything else it cannot decode
//! gets the default SIGILL (the process dies, as it would have).

use std::cell::{Cell, UnsafeCell};
use std::sync::Once;

use super::from_bf16;

/// One thread's tile state: the configuration's bytes, and eight tiles of up to 16 rows of 64 bytes.
struct Tiles {
    config: [u8; 64],
    data: [[[u8; 64]; 16]; 8],
}

impl Tiles {
    fn rows(&self, tile: usize) -> usize {
        self.config[48 + tile] as usize
    }

    fn bytes(&self, tile: usize) -> usize {
        u16::from_le_bytes([self.config[16 + 2 * tile], self.config[17 + 2 * tile]]) as usize
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
unsafe fn execute(instruction: &Instruction, tiles: &mut Tiles) {
    match *instruction {
        Instruction::LoadConfig(address) => {
            // SAFETY: 64 bytes the instruction reads.
            tiles.config = unsafe { *(address as *const [u8; 64]) };
            tiles.data = [[[0; 64]; 16]; 8];
        }
        Instruction::Release => {
            tiles.config = [0; 64];
            tiles.data = [[[0; 64]; 16]; 8];
        }
        Instruction::Zero(tile) => tiles.data[tile] = [[0; 64]; 16],
        Instruction::Load { tile, address, stride } => {
            let (rows, bytes) = (tiles.rows(tile), tiles.bytes(tile));
            tiles.data[tile] = [[0; 64]; 16];
            for row in 0..rows {
                let from = address.wrapping_add(row as u64 * stride) as *const u8;
                // SAFETY: the row's bytes the instruction reads.
                unsafe { std::ptr::copy_nonoverlapping(from, tiles.data[tile][row].as_mut_ptr(), bytes) };
            }
        }
        Instruction::Store { tile, address, stride } => {
            let (rows, bytes) = (tiles.rows(tile), tiles.bytes(tile));
            for row in 0..rows {
                let to = address.wrapping_add(row as u64 * stride) as *mut u8;
                // SAFETY: the row's bytes the instruction writes.
                unsafe { std::ptr::copy_nonoverlapping(tiles.data[tile][row].as_ptr(), to, bytes) };
            }
        }
        Instruction::DotBf16 { dst, a, b } => {
            PRODUCTS.with(|count| count.set(count.get() + 1));
            // The SDM's pseudo-code: per output, the even then the odd product of each pair added
            // in f32 (each product of two bf16 is exact in f32); outputs' subnormals flushed.
            let (rows, columns, pairs) = (tiles.rows(dst), tiles.bytes(dst) / 4, tiles.bytes(a) / 4);
            if tiles.rows(a) != rows || tiles.rows(b) != pairs || tiles.bytes(b) != tiles.bytes(dst) {
                fail(b"AMX emulator: tdpbf16ps on tiles of mismatched shapes\n");
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
}

/// Says `message` and dies by SIGILL (what a real fault would have done): nothing in a signal
/// handler may unwind.
fn fail(message: &[u8]) -> ! {
    // SAFETY: write, signal and raise are async-signal-safe.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
        libc::signal(libc::SIGILL, libc::SIG_DFL);
        libc::raise(libc::SIGILL);
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
            fail(b"AMX emulator: an illegal instruction it does not know\n");
        };
        TILES.with(|tiles| execute(&instruction, &mut *tiles.get()));
        gregs[libc::REG_RIP as usize] = rip + len as i64;
    }
}
