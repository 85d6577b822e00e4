/**
 * A classic-BPF seccomp program for bubblewrap's `--seccomp FD` (SPEC §4):
 * system calls a check never needs and that widen the kernel surface it can
 * reach are answered ENOSYS, the way Flatpak's filter does. The kernel
 * keyring calls are among them because bubblewrap does not give a sandbox a
 * session keyring of its own: without this, checks could read keys the
 * worker holds and leave keys for the next check.
 *
 * Built by hand (no libseccomp): load the architecture, refuse any other
 * (a 32-bit or x32 entry point would have other numbers), then compare the
 * call number against the list.
 */

const BPF_LD_W_ABS = 0x20;
const BPF_JMP_JEQ_K = 0x15;
const BPF_JMP_JGE_K = 0x35;
const BPF_RET_K = 0x06;

const SECCOMP_RET_ALLOW = 0x7fff0000;
const SECCOMP_RET_ERRNO = 0x00050000;
const ENOSYS = 38;

/** Offsets in struct seccomp_data. */
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;

interface ArchTable {
  audit: number;
  /** Calls at or above this number belong to another ABI on the same architecture (x32). */
  abiLimit?: number;
  calls: Record<string, number>;
}

/** The denied calls, by number, for the architectures shipgate's images are built for. */
const ARCHES: Record<string, ArchTable> = {
  x64: {
    audit: 0xc000003e,
    abiLimit: 0x40000000,
    calls: {
      add_key: 248,
      request_key: 249,
      keyctl: 250,
      kexec_load: 246,
      open_by_handle_at: 304,
      perf_event_open: 298,
      kexec_file_load: 320,
      bpf: 321,
      userfaultfd: 323,
      io_uring_setup: 425,
      io_uring_enter: 426,
      io_uring_register: 427,
    },
  },
  arm64: {
    audit: 0xc00000b7,
    calls: {
      add_key: 217,
      request_key: 218,
      keyctl: 219,
      kexec_load: 104,
      open_by_handle_at: 265,
      perf_event_open: 241,
      kexec_file_load: 294,
      bpf: 280,
      userfaultfd: 282,
      io_uring_setup: 425,
      io_uring_enter: 426,
      io_uring_register: 427,
    },
  },
};

export const DENIED_SYSCALLS = Object.keys(ARCHES.x64?.calls ?? {});

function instruction(code: number, jt: number, jf: number, k: number): Buffer {
  const buffer = Buffer.alloc(8);
  buffer.writeUInt16LE(code, 0);
  buffer.writeUInt8(jt, 2);
  buffer.writeUInt8(jf, 3);
  buffer.writeUInt32LE(k >>> 0, 4);
  return buffer;
}

/** The filter for `arch` (Node's `process.arch`), or undefined where shipgate has no table for it. */
export function seccompProgram(arch: string): Buffer | undefined {
  const table = ARCHES[arch];
  if (table === undefined) return undefined;
  const numbers = Object.values(table.calls);
  const deny = instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS);
  const allow = instruction(BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW);
  const body: Buffer[] = [];
  // Each comparison jumps forward to the deny instruction, which sits right after `allow` at the end.
  const compares = numbers.length + (table.abiLimit === undefined ? 0 : 1);
  let remaining = compares;
  if (table.abiLimit !== undefined) {
    remaining--;
    body.push(instruction(BPF_JMP_JGE_K, remaining + 1, 0, table.abiLimit));
  }
  for (const number of numbers) {
    remaining--;
    body.push(instruction(BPF_JMP_JEQ_K, remaining + 1, 0, number));
  }
  return Buffer.concat([
    instruction(BPF_LD_W_ABS, 0, 0, OFFSET_ARCH),
    // Right architecture: go on (skip the deny); any other: deny.
    instruction(BPF_JMP_JEQ_K, 1, 0, table.audit),
    deny,
    instruction(BPF_LD_W_ABS, 0, 0, OFFSET_NR),
    ...body,
    allow,
    deny,
  ]);
}
