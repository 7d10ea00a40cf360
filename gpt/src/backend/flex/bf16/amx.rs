//! The AMX code (Intel since Sapphire Rapids): `tdpbf16ps` multiplies a 16 × 16-pair tile of A
//! by a 16-pair × 16 tile of B into a 16 × 16 f32 tile, 8192 multiply-adds in one instruction
//! (Intel rates a core at 1024 bf16 operations a cycle on AMX against 128 on AVX512-BF16). Rust's
//! AMX intrinsics are unstable, so the tile instructions are `asm!`; the
//! micro-kernel is one `asm!` block, as tile registers are nothing the compiler knows to keep.
//!
//! Linux hands out the 8 KiB of tile state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`):
//! [`state`] asks once, and the products stay on the AVX512-BF16 kernel where the CPU, the OS's
//! kernel or `LLMFS_AMX=0` says no.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::avx512::lanes;
use super::pack::{NR, PAIR_TILE, STRIP_ROWS};

/// Columns of the output one call computes: two tiles (a B panel's 64 take two calls).
pub(super) const COLUMNS: usize = 32;

/// Whether the products may run on AMX, and if the CPU has it but they may not, why: they may
/// where the CPU has AMX-TILE and AMX-BF16 (and the AVX512-BF16 that packs and stores), Linux
/// granted the tile state, and `LLMFS_AMX` is not `0` (to measure the AVX512-BF16 kernel on an AMX
/// machine, or to step around a fault). `super::blocked::amx_state` adds a check of the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    Used,
    /// No AMX-BF16 (or no AVX512-BF16) on this CPU.
    Absent,
    /// `LLMFS_AMX=0`.
    Refused,
    /// Linux did not grant the tile state (a kernel before 5.16, or a signal stack too small for it).
    NotGranted,
    /// The kernel got a check product wrong on this CPU (`super::blocked::amx_state`).
    FailedCheck,
}

pub(super) fn state() -> State {
    static STATE: OnceLock<State> = OnceLock::new();
    *STATE.get_or_init(|| {
        if !(super::avx512_bf16() && cpu_has_amx()) {
            State::Absent
        } else if std::env::var("LLMFS_AMX").is_ok_and(|v| v.trim() == "0") {
            State::Refused
        } else if !tile_state_granted() {
            State::NotGranted
        } else {
            State::Used
        }
    })
}

/// CPUID leaf 7: EDX bit 24 is AMX-TILE, bit 22 AMX-BF16 (std's detection of them is unstable).
fn cpu_has_amx() -> bool {
    // CPUID leaf 7 exists on every CPU with AVX2 (std detects that through it too).
    let leaf = __cpuid_count(7, 0);
    leaf.edx & (1 << 24) != 0 && leaf.edx & (1 << 22) != 0
}

/// Linux ≥ 5.16 enables the tile data (XSAVE feature 18) per process, on request.
fn tile_state_granted() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a system call with plain integer arguments.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

/// Palette 1 with all eight tiles 16 rows of 64 bytes: the panels are padded to whole tiles, so
/// one shape serves every product (C: tmm0–3, A: tmm4–5, B: tmm6–7).
#[repr(C, align(64))]
struct Config([u8; 64]);

/// [`CONFIG`]'s bytes (the emulator's tests start from them).
pub(super) const CONFIG_BYTES: [u8; 64] = {
    let mut bytes = [0u8; 64];
    bytes[0] = 1; // palette
    let mut tile = 0;
    while tile < 8 {
        bytes[16 + 2 * tile] = 64; // bytes a row (u16, little-endian)
        bytes[48 + tile] = 16; // rows
        tile += 1;
    }
    bytes
};

static CONFIG: Config = Config(CONFIG_BYTES);

/// Loads [`CONFIG`] into this thread's tiles: before the kernels a task runs.
///
/// # Safety
/// [`available`] holds (or the tests' emulator stands in).
pub(super) unsafe fn configure() {
    // SAFETY: as the caller promises; CONFIG is 64 readable bytes.
    unsafe { asm!("ldtilecfg [{config}]", config = in(reg) &raw const CONFIG, options(nostack, readonly)) };
}

/// Gives this thread's tile state back (the OS then need not save it at each switch).
///
/// # Safety
/// As [`configure`].
pub(super) unsafe fn release() {
    // SAFETY: as the caller promises.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The kernel's output when it is not written in place: a partial block, or one to add to.
#[repr(C, align(64))]
struct Spill([f32; STRIP_ROWS * COLUMNS]);

/// The micro-kernel: the `STRIP_ROWS × COLUMNS` block of `c` (rows `ldc` apart) `=` or `+=`
/// (`add`) a strip of A times a B panel's columns from `b` on, over `tiles × 16` pairs; stored for
/// its first `rows` rows and `cols` columns. A full block is loaded (when adding) and stored by the
/// tile instructions in place; others go through a spill buffer and masked stores.
///
/// `a` is the strip's first pair, its rows `a_row` words apart; `b` is pair 0 of the panel's first
/// column here, pairs `NR` words apart. Per 16 pairs it loads two A and two B tiles for four
/// `tdpbf16ps`.
///
/// # Safety
/// [`configure`] ran on this thread since its last [`release`]; the strip and panel hold `16·tiles`
/// pairs (`tiles ≥ 1`); `c` has room for `rows` rows of `cols` values (read too when `add`).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn kernel(tiles: usize, a: *const u32, a_row: usize, b: *const u32, c: *mut f32, ldc: usize, rows: usize, cols: usize, add: bool) {
    debug_assert!(tiles >= 1 && rows <= STRIP_ROWS && cols <= COLUMNS);
    let in_place = rows == STRIP_ROWS && cols == COLUMNS;
    let mut spill = Spill([0.0; STRIP_ROWS * COLUMNS]);
    let (out, out_row) = if in_place { (c, ldc) } else { (spill.0.as_mut_ptr(), COLUMNS) };
    // SAFETY: the tiles read 16 rows of 64 bytes from each address below, inside the strip, the
    // panel and the block of `out` as the caller promises; `tiles ≥ 1` runs the loop once at least.
    unsafe {
        asm!(
            "test {load:e}, {load:e}",
            "jz 3f",
            "tileloadd tmm0, [{c} + {c_row}*1]",
            "tileloadd tmm1, [{c} + {c_row}*1 + 64]",
            "tileloadd tmm2, [{c_low} + {c_row}*1]",
            "tileloadd tmm3, [{c_low} + {c_row}*1 + 64]",
            "jmp 4f",
            "3:",
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "4:",
            "tileloadd tmm4, [{a} + {a_row}*1]",
            "tileloadd tmm6, [{b} + {b_row}*1]",
            "tileloadd tmm7, [{b} + {b_row}*1 + 64]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a_low} + {a_row}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            "add {a}, 64",
            "add {a_low}, 64",
            "add {b}, {b_step}",
            "dec {tiles}",
            "jnz 4b",
            "tilestored [{c} + {c_row}*1], tmm0",
            "tilestored [{c} + {c_row}*1 + 64], tmm1",
            "tilestored [{c_low} + {c_row}*1], tmm2",
            "tilestored [{c_low} + {c_row}*1 + 64], tmm3",
            load = in(reg) u32::from(in_place && add),
            a = inout(reg) a => _,
            a_low = inout(reg) a.wrapping_add(16 * a_row) => _,
            a_row = in(reg) 4 * a_row,
            b = inout(reg) b => _,
            b_row = in(reg) 4 * NR,
            b_step = const 4 * NR * PAIR_TILE,
            c = in(reg) out,
            c_low = in(reg) out.wrapping_add(16 * out_row),
            c_row = in(reg) 4 * out_row,
            tiles = inout(reg) tiles => _,
            options(nostack),
        );
    }
    if in_place {
        return;
    }
    for i in 0..rows {
        for h in 0..cols.div_ceil(16) {
            let mask = lanes(cols - 16 * h);
            // SAFETY: the masked lanes are row i's columns 16h.. inside `c`; the spill holds the row.
            unsafe {
                let dst = c.add(i * ldc + 16 * h);
                let v = _mm512_loadu_ps(spill.0.as_ptr().add(i * COLUMNS + 16 * h));
                let v = if add { _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, dst)) } else { v };
                _mm512_mask_storeu_ps(dst, mask, v);
            }
        }
    }
}
