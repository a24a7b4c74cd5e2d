/* kops_bench.h: portability layer so every compute kernel under bpf/kernels/
 * compiles both as eBPF (clang -target bpf) and for the host (gcc/clang),
 * where bpf/native/native.c runs the very same code.
 *
 * Rules for kernels:
 *  - signature: static KOPS_INLINE __u64 <name>_kernel(const __u8 *data,
 *    const __u8 *data_end) unless documented otherwise in the kernel file;
 *  - every memory access is preceded by an explicit `p + n > data_end` check
 *    (the verifier needs it; on the host it is the same bounds check);
 *  - no helpers and no maps;
 *  - wide loads go through KOPS_LD16/32/64 (a typed load on BPF, memcpy on
 *    the host so unaligned access is defined behaviour).
 */
#ifndef KOPS_BENCH_H
#define KOPS_BENCH_H

#if defined(__bpf__)
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#define KOPS_BPF 1
#else
#include <stdint.h>
#include <stddef.h>
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef uint64_t __u64;
typedef int8_t __s8;
typedef int16_t __s16;
typedef int32_t __s32;
typedef int64_t __s64;
#endif

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kops_bench.h assumes a little-endian target (bpfel / x86-64 / arm64)"
#endif

#define KOPS_INLINE inline __attribute__((always_inline))
#define KOPS_NOINLINE __attribute__((noinline))

/* Hide a value from the optimizer: stops clang from rewriting packet-pointer
 * bounds checks into pointer subtraction (which the verifier rejects) and from
 * hoisting repeated rounds out of a loop. Costs nothing at run time. */
#define KOPS_BARRIER_VAR(x) __asm__ __volatile__("" : "+r"(x))

/* Keep a loop rolled (the benchmark wants the loop, not a 1000-fold unroll). */
#if defined(__clang__)
#define KOPS_NO_UNROLL _Pragma("clang loop unroll(disable)")
#elif defined(__GNUC__)
#define KOPS_NO_UNROLL _Pragma("GCC unroll 1")
#else
#define KOPS_NO_UNROLL
#endif

/* Byte order. On BPF with -mcpu=v3 __builtin_bswapN becomes `beN`. */
#define kops_bswap16(x) __builtin_bswap16((__u16)(x))
#define kops_bswap32(x) __builtin_bswap32((__u32)(x))
#define kops_bswap64(x) __builtin_bswap64((__u64)(x))
#define kops_ntohs(x) kops_bswap16(x)
#define kops_ntohl(x) kops_bswap32(x)
#define kops_htons(x) kops_bswap16(x)
#define kops_htonl(x) kops_bswap32(x)
#define kops_be64toh(x) kops_bswap64(x)

/* Little-endian loads of possibly unaligned data. On BPF a typed load (the
 * x86/arm64 kernels allow unaligned packet access); on the host memcpy. */
#if defined(KOPS_BPF)
#define KOPS_LD16(p) (*(const __u16 *)(const void *)(p))
#define KOPS_LD32(p) (*(const __u32 *)(const void *)(p))
#define KOPS_LD64(p) (*(const __u64 *)(const void *)(p))
#define KOPS_ST16(p, v) (*(__u16 *)(void *)(p) = (__u16)(v))
#define KOPS_ST32(p, v) (*(__u32 *)(void *)(p) = (__u32)(v))
#else
static inline __u16 kops_ld16(const void *p) { __u16 v; __builtin_memcpy(&v, p, 2); return v; }
static inline __u32 kops_ld32(const void *p) { __u32 v; __builtin_memcpy(&v, p, 4); return v; }
static inline __u64 kops_ld64(const void *p) { __u64 v; __builtin_memcpy(&v, p, 8); return v; }
static inline void kops_st16(void *p, __u16 v) { __builtin_memcpy(p, &v, 2); }
static inline void kops_st32(void *p, __u32 v) { __builtin_memcpy(p, &v, 4); }
#define KOPS_LD16(p) kops_ld16(p)
#define KOPS_LD32(p) kops_ld32(p)
#define KOPS_LD64(p) kops_ld64(p)
#define KOPS_ST16(p, v) kops_st16((p), (__u16)(v))
#define KOPS_ST32(p, v) kops_st32((p), (__u32)(v))
#endif

/* Big-endian loads: load then byte swap of the same register. */
#define KOPS_LDBE16(p) kops_ntohs(KOPS_LD16(p))
#define KOPS_LDBE32(p) kops_ntohl(KOPS_LD32(p))
#define KOPS_LDBE64(p) kops_be64toh(KOPS_LD64(p))

/* Rotates, written the way C programs write them (clang -target bpf expands
 * them to mov/lsh/rsh/or since eBPF has no rotate). k must be a constant
 * in 1..63 (1..31). */
#define KOPS_ROTL64(x, k) (((__u64)(x) << (k)) | ((__u64)(x) >> (64 - (k))))
#define KOPS_ROTL32(x, k) (((__u32)(x) << (k)) | ((__u32)(x) >> (32 - (k))))

/* Force an object to live in memory at this point (stops SROA from dissolving
 * the struct copies the benchmark is about). Emits no instruction. */
#define KOPS_BARRIER_MEM(ptr) __asm__ __volatile__("" : : "r"(ptr) : "memory")

/* A function the verifier checks once, on its own (BPF global function):
 * used where per-call-site verification would explode (binary search). */
#if defined(KOPS_BPF)
#define KOPS_GLOBAL_FN __attribute__((noinline))
#else
#define KOPS_GLOBAL_FN static __attribute__((noinline))
#endif

/* Copy a struct out of the packet: a typed (8-byte) copy on BPF, memcpy on
 * the host (the packet pointer is not aligned for the struct type). */
#if defined(KOPS_BPF)
#define KOPS_COPY_FROM(dst, src, T) (*(dst) = *(const T *)(const void *)(src))
#else
#define KOPS_COPY_FROM(dst, src, T) __builtin_memcpy((dst), (src), sizeof(T))
#endif

/* One benchmark run = KOPS_ROUNDS_<NAME> passes of a kernel over the packet;
 * the per-pass results are folded with kops_fold. The BPF wrappers reload
 * ctx->data (volatile) for every pass, so the verifier starts each pass with
 * a fresh packet pointer and can prune the states left by the previous pass. */
static KOPS_INLINE __u64 kops_fold(__u64 acc, __u64 r) { return acc * 31 + r; }

/* Header layouts (plain structs so host and BPF share them). */
#define KOPS_ETH_HLEN 14
#define KOPS_ETH_P_IP 0x0800
#define KOPS_ETH_P_IPV6 0x86DD
#define KOPS_ETH_P_8021Q 0x8100
#define KOPS_ETH_P_8021AD 0x88A8
#define KOPS_IPPROTO_TCP 6
#define KOPS_IPPROTO_UDP 17

struct kops_ethhdr {
	__u8 dst[6];
	__u8 src[6];
	__u16 proto; /* big endian */
};

struct kops_iphdr {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct kops_udphdr {
	__u16 source;
	__u16 dest;
	__u16 len;
	__u16 check;
};

/* XDP return codes, also defined for the host so kernels may return them. */
#ifndef KOPS_BPF
#define XDP_ABORTED 0
#define XDP_DROP 1
#define XDP_PASS 2
#define XDP_TX 3
#endif

#endif /* KOPS_BENCH_H */
