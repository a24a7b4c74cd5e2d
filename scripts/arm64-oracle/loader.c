/*
 * Kops arm64 oracle loader: /init of an initramfs booted under qemu-system-aarch64.
 *
 * Reads a batch of jobs from /jobs.bin (format below, little-endian), and for each job
 * creates its maps, loads its program with bpf(2) directly (no libbpf), prints the
 * verifier's verdict and log, the xlated and jited images (BPF_OBJ_GET_INFO_BY_FD) and
 * the result of each BPF_PROG_TEST_RUN on the console, then powers the machine off.
 * Built static with aarch64-linux-gnu-gcc by scripts/arm64-kernel.sh.
 *
 * Batch: "KOPSBAT1", u32 njobs, u32 nsyms, nsyms kernel symbol names (bytes) to look up in
 * /proc/kallsyms, then njobs jobs. A "bytes" field is u32 length + data.
 *   job:  u32 prog_type, expected_attach_type, prog_flags, log_level, kern_version, flags
 *         (bit 0: read every map back after the runs; bit 1: after each run, read back
 *         the maps' non-zero elements and put the maps back as created);
 *         bytes name, license, insns (8-byte slots; map references as ld_imm64
 *         src=PSEUDO_MAP_IDX(_VALUE), imm = map index), btf (empty: none), func_info
 *         (8-byte records), line_info (16-byte records); u32 nmaps, maps; u32 nruns, runs.
 *   map:  u32 type, key_size, value_size, max_entries, flags, btf_key_type_id,
 *         btf_value_type_id, freeze; u64 map_extra; u32 inner type (0: none), key_size,
 *         value_size, max_entries, flags; bytes name; u32 nentries, (bytes key, bytes
 *         value)*; u32 nslots, (bytes key, u32 map index)*: map-in-map elements set to
 *         another map of the job, once all maps exist.
 *   run:  bytes data_in, ctx_in; u32 data_out capacity, ctx_out capacity, repeat, flags.
 *
 * Output: lines "KOPS <record> ...", binary fields in hex ("-" when empty), <j> the job:
 *   begin <njobs> <release> <ncpus>      sym <name> <hex address>
 *   job <j>                              btf <j> ok | btf <j> err <errno> <log>
 *   map <j> <m> ok | map <j> <m> err <errno>
 *   load <j> ok | load <j> err <errno>   log <j> <log>
 *   info <j> <verified_insns> <nr_jited_ksyms>
 *   xlated <j> <insns>                   jited <j> <image>
 *   funclens <j> <n,n,...>               ksyms <j> <hex address,...> (each jited function)
 *   lines <j> <xlated insn:hex address,...> (BTF line info records)
 *   run <j> <r> ok <retval> <data_out> <ctx_out> | run <j> <r> err <errno>
 *   rdump <j> <r> <m> <key> <value>      (after run r, flag bit 1)
 *   dump <j> <m> <key> <value>           (after the runs, flag bit 0)
 *   dumperr <j> <r or -1> <m> <errno>    time <j> <load us> <runs us> <job us>
 *   done <j>                             end                  fatal <message>
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/reboot.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static FILE *out;

static uint64_t now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static void finish(void)
{
	fflush(out);
	tcdrain(fileno(out));
	sync();
	reboot(RB_POWER_OFF);
	for (;;)
		pause();
}

static void hex(const void *p, size_t n)
{
	static const char d[] = "0123456789abcdef";
	const uint8_t *b = p;
	if (n == 0) {
		fputc('-', out);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		fputc(d[b[i] >> 4], out);
		fputc(d[b[i] & 15], out);
	}
}

static void fatal(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	fprintf(out, "\nKOPS fatal ");
	hex(msg, strlen(msg));
	fputc('\n', out);
	finish();
}

static long sys_bpf(int cmd, union bpf_attr *attr)
{
	return syscall(__NR_bpf, cmd, attr, sizeof *attr);
}

/* ---- batch reader ---- */

static const uint8_t *start, *cur, *end;

static uint32_t u32(void)
{
	uint32_t v;
	if (end - cur < 4)
		fatal("batch truncated at byte %ld", (long)(cur - start));
	memcpy(&v, cur, 4);
	cur += 4;
	return v;
}

static uint64_t u64(void)
{
	uint64_t lo = u32();
	return lo | (uint64_t)u32() << 32;
}

struct bytes {
	const uint8_t *p;
	uint32_t n;
};

static struct bytes bytes(void)
{
	struct bytes b;
	b.n = u32();
	if ((size_t)(end - cur) < b.n)
		fatal("batch truncated: a field of %u bytes runs past the end", b.n);
	b.p = cur;
	cur += b.n;
	return b;
}

static void write_file(const char *path, const char *v)
{
	int fd = open(path, O_WRONLY);
	if (fd >= 0) {
		if (write(fd, v, strlen(v)) < 0) {
			/* best effort: the settings only quiet the console or confirm defaults */
		}
		close(fd);
	}
}

static int possible_cpus(void)
{
	char buf[64] = {0};
	int fd = open("/sys/devices/system/cpu/possible", O_RDONLY);
	if (fd < 0)
		return 1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 1;
	/* "0" or "0-N" */
	char *dash = strchr(buf, '-');
	return dash ? atoi(dash + 1) + 1 : 1;
}

static int is_percpu(uint32_t t)
{
	return t == BPF_MAP_TYPE_PERCPU_ARRAY || t == BPF_MAP_TYPE_PERCPU_HASH ||
	       t == BPF_MAP_TYPE_LRU_PERCPU_HASH;
}

#define MAX_MAPS 256
#define MAX_SLOTS 1024

static char *logbuf;
static size_t logcap = 1 << 20;
#define LOG_MAX (256u << 20)

static int load_prog(union bpf_attr *a, uint32_t level)
{
	for (;;) {
		logbuf[0] = 0;
		a->log_level = level;
		a->log_buf = level ? (uint64_t)(uintptr_t)logbuf : 0;
		a->log_size = level ? logcap : 0;
		int fd = sys_bpf(BPF_PROG_LOAD, a);
		if (fd < 0 && errno == ENOSPC && level && logcap < LOG_MAX) {
			free(logbuf);
			logcap *= 4;
			logbuf = malloc(logcap);
			if (!logbuf)
				fatal("out of memory for a %zu-byte verifier log", logcap);
			continue;
		}
		return fd < 0 ? -errno : fd;
	}
}

/* What the loader keeps of a job's map: its fd, shape and initial entries (key, value
 * pairs pointing into the batch). */
struct jmap {
	int fd;
	uint32_t type, ks, vs, max, freeze, nent;
	struct bytes *ent;
};

static int is_array_map(uint32_t t)
{
	return t == BPF_MAP_TYPE_ARRAY || t == BPF_MAP_TYPE_PERCPU_ARRAY;
}

static int is_keyed_map(uint32_t t)
{
	return t == BPF_MAP_TYPE_HASH || t == BPF_MAP_TYPE_PERCPU_HASH || t == BPF_MAP_TYPE_LRU_HASH ||
	       t == BPF_MAP_TYPE_LRU_PERCPU_HASH || t == BPF_MAP_TYPE_LPM_TRIE;
}

static int is_queue_map(uint32_t t)
{
	return t == BPF_MAP_TYPE_QUEUE || t == BPF_MAP_TYPE_STACK;
}

static int all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

/* One element read back: "dump <j> <m> <key> <value>" after the runs (run < 0), else
 * "rdump <j> <run> <m> <key> <value>". */
static void print_elem(uint32_t j, int run, int m, const void *k, size_t kn, const void *v, size_t vn)
{
	if (run < 0)
		fprintf(out, "KOPS dump %u %d ", j, m);
	else
		fprintf(out, "KOPS rdump %u %d %d ", j, run, m);
	hex(k, kn);
	fputc(' ', out);
	hex(v, vn);
	fputc('\n', out);
}

static void dump_error(uint32_t j, int run, int m, int e)
{
	fprintf(out, "KOPS dumperr %u %d %d %d\n", j, run, m, e);
}

static int map_update(int fd, const void *k, const void *v)
{
	union bpf_attr a;
	memset(&a, 0, sizeof a);
	a.map_fd = fd;
	a.key = (uint64_t)(uintptr_t)k;
	a.value = (uint64_t)(uintptr_t)v;
	return sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0 ? errno : 0;
}

/* Reads map m back (arrays, hashes, LPM tries, queues and stacks; other types hold kernel
 * objects or cannot be listed and are left out). With nonzero, array elements that are
 * all zero are left out. With reset, the map is then put back as the job created it:
 * the elements read are zeroed (arrays) or deleted (hashes), queues are left empty (they
 * are read by popping), and the job's initial entries are written again. */
static void read_map(uint32_t j, int run, int m, struct jmap *jm, int ncpus, int nonzero, int reset)
{
	size_t vsz = is_percpu(jm->type) ? (size_t)((jm->vs + 7) & ~7u) * ncpus : jm->vs;
	union bpf_attr a;
	if (jm->fd < 0)
		return;
	if (is_array_map(jm->type)) {
		/* BPF_MAP_LOOKUP_BATCH in chunks; per-index lookups where batches are refused */
		uint32_t chunk = jm->max < 4096 ? (jm->max ? jm->max : 1) : 4096;
		uint8_t *keys = malloc((size_t)chunk * 4), *vals = malloc((size_t)chunk * vsz + 1);
		uint8_t *zero = calloc(1, vsz + 1);
		uint32_t in = 0, outb = 0, seen = 0;
		int first = 1, batch_ok = 1;
		if (!keys || !vals || !zero)
			fatal("out of memory reading map %d of job %u", m, j);
		while (seen < jm->max) {
			uint32_t count = chunk, done = 0;
			if (batch_ok) {
				memset(&a, 0, sizeof a);
				a.batch.map_fd = jm->fd;
				a.batch.in_batch = first ? 0 : (uint64_t)(uintptr_t)&in;
				a.batch.out_batch = (uint64_t)(uintptr_t)&outb;
				a.batch.keys = (uint64_t)(uintptr_t)keys;
				a.batch.values = (uint64_t)(uintptr_t)vals;
				a.batch.count = chunk;
				if (sys_bpf(BPF_MAP_LOOKUP_BATCH, &a) < 0) {
					if (errno == ENOENT) {
						done = 1;
					} else if (first) {
						batch_ok = 0;
						continue;
					} else {
						dump_error(j, run, m, errno);
						break;
					}
				}
				count = a.batch.count;
				in = outb;
			} else {
				count = jm->max - seen < chunk ? jm->max - seen : chunk;
				for (uint32_t i = 0; i < count; i++) {
					uint32_t idx = seen + i;
					memcpy(keys + 4 * i, &idx, 4);
					memset(&a, 0, sizeof a);
					a.map_fd = jm->fd;
					a.key = (uint64_t)(uintptr_t)&idx;
					a.value = (uint64_t)(uintptr_t)(vals + vsz * i);
					if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) < 0) {
						dump_error(j, run, m, errno);
						count = i;
						done = 1;
						break;
					}
				}
			}
			first = 0;
			for (uint32_t i = 0; i < count; i++) {
				uint8_t *v = vals + vsz * i;
				if (nonzero && all_zero(v, vsz))
					continue;
				print_elem(j, run, m, keys + 4 * i, 4, v, vsz);
				if (reset) {
					int e = map_update(jm->fd, keys + 4 * i, zero);
					if (e)
						dump_error(j, run, m, e);
				}
			}
			seen += count;
			if (done || count == 0)
				break;
		}
		free(keys);
		free(vals);
		free(zero);
	} else if (is_keyed_map(jm->type)) {
		size_t cap = 64, n = 0, ks = jm->ks ? jm->ks : 1;
		uint8_t *keys = malloc(cap * ks), *val = malloc(vsz + 1);
		if (!keys || !val)
			fatal("out of memory reading map %d of job %u", m, j);
		for (;;) {
			if (n == cap) {
				cap *= 2;
				keys = realloc(keys, cap * ks);
				if (!keys)
					fatal("out of memory reading map %d of job %u", m, j);
			}
			memset(&a, 0, sizeof a);
			a.map_fd = jm->fd;
			a.key = n ? (uint64_t)(uintptr_t)(keys + (n - 1) * ks) : 0;
			a.next_key = (uint64_t)(uintptr_t)(keys + n * ks);
			if (sys_bpf(BPF_MAP_GET_NEXT_KEY, &a) < 0) {
				if (errno != ENOENT)
					dump_error(j, run, m, errno);
				break;
			}
			n++;
		}
		for (size_t i = 0; i < n; i++) {
			memset(&a, 0, sizeof a);
			a.map_fd = jm->fd;
			a.key = (uint64_t)(uintptr_t)(keys + i * ks);
			a.value = (uint64_t)(uintptr_t)val;
			if (sys_bpf(BPF_MAP_LOOKUP_ELEM, &a) < 0) {
				if (errno != ENOENT)
					dump_error(j, run, m, errno);
				continue;
			}
			print_elem(j, run, m, keys + i * ks, jm->ks, val, vsz);
		}
		for (size_t i = 0; reset && i < n; i++) {
			memset(&a, 0, sizeof a);
			a.map_fd = jm->fd;
			a.key = (uint64_t)(uintptr_t)(keys + i * ks);
			if (sys_bpf(BPF_MAP_DELETE_ELEM, &a) < 0 && errno != ENOENT)
				dump_error(j, run, m, errno);
		}
		free(keys);
		free(val);
	} else if (is_queue_map(jm->type)) {
		uint8_t *val = malloc(vsz + 1);
		if (!val)
			fatal("out of memory reading map %d of job %u", m, j);
		for (uint32_t i = 0;; i++) {
			memset(&a, 0, sizeof a);
			a.map_fd = jm->fd;
			a.value = (uint64_t)(uintptr_t)val;
			if (sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &a) < 0) {
				if (errno != ENOENT)
					dump_error(j, run, m, errno);
				break;
			}
			print_elem(j, run, m, &i, 4, val, vsz);
		}
		free(val);
	} else {
		return;
	}
	for (uint32_t e = 0; reset && e < jm->nent; e++) {
		const void *k = is_queue_map(jm->type) ? NULL : jm->ent[2 * e].p;
		int err = map_update(jm->fd, k, jm->ent[2 * e + 1].p);
		if (err)
			dump_error(j, run, m, err);
	}
}

static void run_job(uint32_t j, int ncpus)
{
	uint32_t prog_type = u32(), attach = u32(), prog_flags = u32(), log_level = u32();
	uint32_t kver = u32(), flags = u32();
	struct bytes name = bytes(), license = bytes(), insns = bytes(), btf = bytes();
	struct bytes finfo = bytes(), linfo = bytes();
	int map_fds[MAX_MAPS], nmap_fds = 0;
	static struct jmap maps[MAX_MAPS];
	int btf_fd = -1, prog_fd = -1;
	char namebuf[BPF_OBJ_NAME_LEN] = {0}, lic[128] = {0};

	uint64_t t0 = now_us(), t_load = 0, t_runs = 0;
	fprintf(out, "KOPS job %u\n", j);
	memcpy(namebuf, name.p, name.n < BPF_OBJ_NAME_LEN - 1 ? name.n : BPF_OBJ_NAME_LEN - 1);
	memcpy(lic, license.p, license.n < sizeof lic - 1 ? license.n : sizeof lic - 1);
	if (!lic[0])
		strcpy(lic, "GPL");

	if (btf.n) {
		union bpf_attr a;
		memset(&a, 0, sizeof a);
		a.btf = (uint64_t)(uintptr_t)btf.p;
		a.btf_size = btf.n;
		btf_fd = sys_bpf(BPF_BTF_LOAD, &a);
		if (btf_fd < 0) {
			int e = errno;
			memset(&a, 0, sizeof a);
			a.btf = (uint64_t)(uintptr_t)btf.p;
			a.btf_size = btf.n;
			a.btf_log_buf = (uint64_t)(uintptr_t)logbuf;
			a.btf_log_size = logcap;
			a.btf_log_level = 1;
			logbuf[0] = 0;
			sys_bpf(BPF_BTF_LOAD, &a);
			fprintf(out, "KOPS btf %u err %d ", j, e);
			hex(logbuf, strnlen(logbuf, logcap));
			fputc('\n', out);
		} else {
			fprintf(out, "KOPS btf %u ok\n", j);
		}
	}

	uint32_t nmaps = u32();
	int maps_ok = 1;
	struct {
		uint32_t map, target;
		struct bytes key;
	} slots[MAX_SLOTS];
	uint32_t nslots = 0;
	if (nmaps > MAX_MAPS)
		fatal("job %u declares %u maps (at most %d)", j, nmaps, MAX_MAPS);
	for (uint32_t m = 0; m < nmaps; m++) {
		uint32_t type = u32(), ks = u32(), vs = u32(), max = u32(), mflags = u32();
		uint32_t bkey = u32(), bval = u32(), freeze = u32();
		uint64_t extra = u64();
		uint32_t itype = u32(), iks = u32(), ivs = u32(), imax = u32(), iflags = u32();
		struct bytes mname = bytes();
		uint32_t nent = u32();
		int inner = -1, fd = -1, err = 0;
		struct jmap *jm = &maps[m];
		jm->type = type;
		jm->ks = ks;
		jm->vs = vs;
		jm->max = max;
		jm->freeze = freeze;
		jm->nent = nent;
		jm->ent = nent ? calloc(2 * (size_t)nent, sizeof(struct bytes)) : NULL;
		if (nent && !jm->ent)
			fatal("out of memory for the entries of map %u of job %u", m, j);
		union bpf_attr a;
		if (itype) {
			memset(&a, 0, sizeof a);
			a.map_type = itype;
			a.key_size = iks;
			a.value_size = ivs;
			a.max_entries = imax;
			a.map_flags = iflags;
			inner = sys_bpf(BPF_MAP_CREATE, &a);
			if (inner < 0)
				err = errno;
		}
		if (!err) {
			memset(&a, 0, sizeof a);
			a.map_type = type;
			a.key_size = ks;
			a.value_size = vs;
			a.max_entries = max;
			a.map_flags = mflags;
			a.map_extra = extra;
			if (inner >= 0)
				a.inner_map_fd = inner;
			memcpy(a.map_name, mname.p, mname.n < BPF_OBJ_NAME_LEN - 1 ? mname.n : BPF_OBJ_NAME_LEN - 1);
			for (char *c = a.map_name; *c; c++)
				if (!(*c == '_' || *c == '.' || (*c >= '0' && *c <= '9') ||
				      ((*c | 32) >= 'a' && (*c | 32) <= 'z')))
					*c = '_';
			if (btf_fd >= 0 && (bkey || bval)) {
				a.btf_fd = btf_fd;
				a.btf_key_type_id = bkey;
				a.btf_value_type_id = bval;
			}
			fd = sys_bpf(BPF_MAP_CREATE, &a);
			if (fd < 0 && a.btf_fd) {
				/* as libbpf: retry without BTF ids */
				a.btf_fd = a.btf_key_type_id = a.btf_value_type_id = 0;
				fd = sys_bpf(BPF_MAP_CREATE, &a);
			}
			if (fd < 0)
				err = errno;
		}
		if (inner >= 0)
			close(inner);
		for (uint32_t e = 0; e < nent; e++) {
			struct bytes k = bytes(), v = bytes();
			jm->ent[2 * e] = k;
			jm->ent[2 * e + 1] = v;
			if (fd >= 0 && !err) {
				memset(&a, 0, sizeof a);
				a.map_fd = fd;
				a.key = (uint64_t)(uintptr_t)k.p;
				a.value = (uint64_t)(uintptr_t)v.p;
				if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0)
					err = errno;
			}
		}
		uint32_t ns = u32();
		for (uint32_t i = 0; i < ns; i++) {
			if (nslots == MAX_SLOTS)
				fatal("job %u sets more than %d map-in-map slots", j, MAX_SLOTS);
			slots[nslots].map = m;
			slots[nslots].key = bytes();
			slots[nslots].target = u32();
			nslots++;
		}
		if (fd >= 0 && !err && freeze) {
			memset(&a, 0, sizeof a);
			a.map_fd = fd;
			if (sys_bpf(BPF_MAP_FREEZE, &a) < 0)
				err = errno;
		}
		if (err) {
			fprintf(out, "KOPS map %u %u err %d\n", j, m, err);
			maps_ok = 0;
			if (fd >= 0)
				close(fd);
			fd = -1;
		} else {
			fprintf(out, "KOPS map %u %u ok\n", j, m);
		}
		map_fds[nmap_fds] = fd;
		jm->fd = fd;
		nmap_fds++;
	}

	for (uint32_t i = 0; i < nslots && maps_ok; i++) {
		uint32_t m = slots[i].map, t = slots[i].target;
		union bpf_attr a;
		if (t >= (uint32_t)nmap_fds)
			fatal("job %u: a slot of map %u names map %u, which the job does not have", j, m, t);
		uint32_t inner = map_fds[t];
		memset(&a, 0, sizeof a);
		a.map_fd = map_fds[m];
		a.key = (uint64_t)(uintptr_t)slots[i].key.p;
		a.value = (uint64_t)(uintptr_t)&inner;
		if (sys_bpf(BPF_MAP_UPDATE_ELEM, &a) < 0) {
			fprintf(out, "KOPS map %u %u err %d\n", j, m, errno);
			maps_ok = 0;
		}
	}

	if (maps_ok) {
		union bpf_attr a;
		memset(&a, 0, sizeof a);
		a.prog_type = prog_type;
		a.expected_attach_type = attach;
		a.prog_flags = prog_flags;
		a.kern_version = kver;
		a.insns = (uint64_t)(uintptr_t)insns.p;
		a.insn_cnt = insns.n / 8;
		a.license = (uint64_t)(uintptr_t)lic;
		memcpy(a.prog_name, namebuf, sizeof a.prog_name - 1);
		for (char *c = a.prog_name; *c; c++)
			if (!(*c == '_' || *c == '.' || (*c >= '0' && *c <= '9') ||
			      ((*c | 32) >= 'a' && (*c | 32) <= 'z')))
				*c = '_';
		if (nmap_fds)
			a.fd_array = (uint64_t)(uintptr_t)map_fds;
		if (btf_fd >= 0) {
			a.prog_btf_fd = btf_fd;
			if (finfo.n) {
				a.func_info = (uint64_t)(uintptr_t)finfo.p;
				a.func_info_cnt = finfo.n / 8;
				a.func_info_rec_size = 8;
			}
			if (linfo.n) {
				a.line_info = (uint64_t)(uintptr_t)linfo.p;
				a.line_info_cnt = linfo.n / 16;
				a.line_info_rec_size = 16;
			}
		}
		uint64_t t1 = now_us();
		prog_fd = load_prog(&a, log_level);
		t_load = now_us() - t1;
		if (prog_fd < 0 && (log_level & 3) == 0) {
			int e = -prog_fd;
			union bpf_attr b = a;
			int again = load_prog(&b, log_level | 1);
			if (again >= 0)
				close(again);
			prog_fd = -e;
			log_level |= 1;
		}
		if (prog_fd < 0)
			fprintf(out, "KOPS load %u err %d\n", j, -prog_fd);
		else
			fprintf(out, "KOPS load %u ok\n", j);
		if (log_level) {
			fprintf(out, "KOPS log %u ", j);
			hex(logbuf, strnlen(logbuf, logcap));
			fputc('\n', out);
		}
	}

	if (prog_fd >= 0) {
		struct bpf_prog_info info;
		union bpf_attr a;
		memset(&info, 0, sizeof info);
		memset(&a, 0, sizeof a);
		a.info.bpf_fd = prog_fd;
		a.info.info_len = sizeof info;
		a.info.info = (uint64_t)(uintptr_t)&info;
		if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) < 0) {
			fprintf(out, "KOPS infoerr %u %d\n", j, errno);
		} else {
			uint32_t xl = info.xlated_prog_len, jl = info.jited_prog_len;
			uint32_t nfl = info.nr_jited_func_lens, nks = info.nr_jited_ksyms;
			uint32_t nli = info.nr_line_info, njli = info.nr_jited_line_info;
			if (njli != nli)
				nli = njli = 0; /* only pairs are of use */
			uint8_t *xb = malloc(xl + 1), *jb = malloc(jl + 1);
			uint32_t *fl = malloc(sizeof(uint32_t) * (nfl + 1));
			uint64_t *ks = malloc(sizeof(uint64_t) * (nks + 1));
			struct bpf_line_info *li = malloc(sizeof(*li) * (nli + 1));
			uint64_t *jli = malloc(sizeof(uint64_t) * (njli + 1));
			if (!xb || !jb || !fl || !ks || !li || !jli)
				fatal("out of memory for the images of job %u", j);
			memset(&info, 0, sizeof info);
			info.xlated_prog_len = xl;
			info.xlated_prog_insns = (uint64_t)(uintptr_t)xb;
			info.jited_prog_len = jl;
			info.jited_prog_insns = (uint64_t)(uintptr_t)jb;
			info.nr_jited_func_lens = nfl;
			info.jited_func_lens = (uint64_t)(uintptr_t)fl;
			info.nr_jited_ksyms = nks;
			info.jited_ksyms = (uint64_t)(uintptr_t)ks;
			if (nli) {
				info.nr_line_info = nli;
				info.line_info_rec_size = sizeof(*li);
				info.line_info = (uint64_t)(uintptr_t)li;
				info.nr_jited_line_info = njli;
				info.jited_line_info_rec_size = sizeof(uint64_t);
				info.jited_line_info = (uint64_t)(uintptr_t)jli;
			}
			memset(&a, 0, sizeof a);
			a.info.bpf_fd = prog_fd;
			a.info.info_len = sizeof info;
			a.info.info = (uint64_t)(uintptr_t)&info;
			if (sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &a) < 0) {
				fprintf(out, "KOPS infoerr %u %d\n", j, errno);
			} else {
				if (info.xlated_prog_len < xl)
					xl = info.xlated_prog_len;
				if (info.jited_prog_len < jl)
					jl = info.jited_prog_len;
				if (info.nr_jited_func_lens < nfl)
					nfl = info.nr_jited_func_lens;
				if (info.nr_jited_ksyms < nks)
					nks = info.nr_jited_ksyms;
				fprintf(out, "KOPS info %u %u %u\n", j, info.verified_insns, info.nr_jited_ksyms);
				fprintf(out, "KOPS xlated %u ", j);
				hex(xb, xl);
				fprintf(out, "\nKOPS jited %u ", j);
				hex(jb, jl);
				fprintf(out, "\nKOPS funclens %u ", j);
				if (!nfl)
					fputc('-', out);
				for (uint32_t i = 0; i < nfl; i++)
					fprintf(out, i ? ",%u" : "%u", fl[i]);
				fprintf(out, "\nKOPS lines %u ", j);
				if (!nli || info.nr_line_info < nli || info.nr_jited_line_info < njli)
					fputc('-', out);
				else
					for (uint32_t i = 0; i < nli; i++)
						fprintf(out, i ? ",%u:%llx" : "%u:%llx", li[i].insn_off,
							(unsigned long long)jli[i]);
				fprintf(out, "\nKOPS ksyms %u ", j);
				if (!nks)
					fputc('-', out);
				for (uint32_t i = 0; i < nks; i++)
					fprintf(out, i ? ",%llx" : "%llx", (unsigned long long)ks[i]);
				fputc('\n', out);
			}
			free(xb);
			free(jb);
			free(fl);
			free(ks);
			free(li);
			free(jli);
		}
	}

	uint32_t nruns = u32();
	uint64_t t2 = now_us();
	for (uint32_t r = 0; r < nruns; r++) {
		struct bytes din = bytes(), cin = bytes();
		uint32_t dcap = u32(), ccap = u32(), repeat = u32(), rflags = u32();
		if (prog_fd < 0)
			continue;
		uint8_t *dout = malloc(dcap + 1), *cout = malloc(ccap + 1);
		if (!dout || !cout)
			fatal("out of memory for the output of run %u of job %u", r, j);
		union bpf_attr a;
		memset(&a, 0, sizeof a);
		a.test.prog_fd = prog_fd;
		a.test.repeat = repeat;
		a.test.flags = rflags;
		if (din.n) {
			a.test.data_in = (uint64_t)(uintptr_t)din.p;
			a.test.data_size_in = din.n;
		}
		if (dcap) {
			a.test.data_out = (uint64_t)(uintptr_t)dout;
			a.test.data_size_out = dcap;
		}
		if (cin.n) {
			a.test.ctx_in = (uint64_t)(uintptr_t)cin.p;
			a.test.ctx_size_in = cin.n;
		}
		if (ccap) {
			a.test.ctx_out = (uint64_t)(uintptr_t)cout;
			a.test.ctx_size_out = ccap;
		}
		if (sys_bpf(BPF_PROG_TEST_RUN, &a) < 0) {
			fprintf(out, "KOPS run %u %u err %d\n", j, r, errno);
		} else {
			uint32_t dn = a.test.data_size_out < dcap ? a.test.data_size_out : dcap;
			uint32_t cn = a.test.ctx_size_out < ccap ? a.test.ctx_size_out : ccap;
			fprintf(out, "KOPS run %u %u ok %u ", j, r, a.test.retval);
			hex(dout, dn);
			fputc(' ', out);
			hex(cout, cn);
			fputc('\n', out);
			if (flags & 2)
				for (int m = 0; m < nmap_fds; m++)
					if (!maps[m].freeze)
						read_map(j, (int)r, m, &maps[m], ncpus, 1, 1);
		}
		free(dout);
		free(cout);
	}

	t_runs = now_us() - t2;
	if (prog_fd >= 0 && (flags & 1))
		for (int m = 0; m < nmap_fds; m++)
			read_map(j, -1, m, &maps[m], ncpus, 0, 0);

	if (prog_fd >= 0)
		close(prog_fd);
	for (int m = 0; m < nmap_fds; m++) {
		if (map_fds[m] >= 0)
			close(map_fds[m]);
		free(maps[m].ent);
		maps[m].ent = NULL;
	}
	if (btf_fd >= 0)
		close(btf_fd);
	fprintf(out, "KOPS time %u %llu %llu %llu\n", j, (unsigned long long)t_load,
		(unsigned long long)t_runs, (unsigned long long)(now_us() - t0));
	fprintf(out, "KOPS done %u\n", j);
	fflush(out);
}

/* Prints "KOPS sym <name> <address>" for each of the names found in /proc/kallsyms. */
static void lookup_symbols(const struct bytes *syms, uint32_t n)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	char line[1024];
	uint32_t found = 0;
	if (!f)
		return;
	while (found < n && fgets(line, sizeof line, f)) {
		unsigned long long addr;
		char type, name[512];
		if (sscanf(line, "%llx %c %511s", &addr, &type, name) != 3)
			continue;
		size_t len = strlen(name);
		for (uint32_t i = 0; i < n; i++) {
			if (syms[i].n == len && memcmp(syms[i].p, name, len) == 0) {
				fprintf(out, "KOPS sym %s %llx\n", name, addr);
				found++;
			}
		}
	}
	fclose(f);
}

int main(void)
{
	mkdir("/dev", 0755);
	mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
	int cfd = open("/dev/console", O_WRONLY | O_NOCTTY);
	out = cfd >= 0 ? fdopen(cfd, "w") : stdout;
	if (!out)
		out = stdout;
	setvbuf(out, NULL, _IOFBF, 1 << 16);
	if (cfd >= 0) {
		/* Raw output: no \r added before each \n. */
		struct termios t;
		if (tcgetattr(cfd, &t) == 0) {
			t.c_oflag &= ~OPOST;
			tcsetattr(cfd, TCSANOW, &t);
		}
	}
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mount("proc", "/proc", "proc", 0, NULL);
	mount("sysfs", "/sys", "sysfs", 0, NULL);
	/* Only emergencies on the console from here on: our lines must not be split. */
	write_file("/proc/sys/kernel/printk", "1 4 1 1");
	write_file("/proc/sys/net/core/bpf_jit_enable", "1");
	write_file("/proc/sys/net/core/bpf_jit_harden", "0");
	write_file("/proc/sys/kernel/kptr_restrict", "0");

	logbuf = malloc(logcap);
	if (!logbuf)
		fatal("out of memory for the verifier log");

	int fd = open("/jobs.bin", O_RDONLY);
	if (fd < 0)
		fatal("cannot open /jobs.bin: %s", strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0)
		fatal("cannot stat /jobs.bin: %s", strerror(errno));
	uint8_t *batch = malloc(st.st_size + 1);
	if (!batch)
		fatal("out of memory for a %lld-byte batch", (long long)st.st_size);
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, batch + got, st.st_size - got);
		if (n <= 0)
			fatal("reading /jobs.bin: %s", n < 0 ? strerror(errno) : "short file");
		got += n;
	}
	close(fd);
	start = cur = batch;
	end = batch + got;
	if (got < 8 || memcmp(cur, "KOPSBAT1", 8) != 0)
		fatal("/jobs.bin is not a Kops batch (bad magic)");
	cur += 8;
	uint32_t njobs = u32();
	uint32_t nsyms = u32();
	struct bytes syms[64];
	if (nsyms > 64)
		fatal("%u symbols asked for (at most 64)", nsyms);
	for (uint32_t i = 0; i < nsyms; i++)
		syms[i] = bytes();
	struct utsname u;
	uname(&u);
	int ncpus = possible_cpus();
	fprintf(out, "\nKOPS begin %u %s %d\n", njobs, u.release, ncpus);
	if (nsyms)
		lookup_symbols(syms, nsyms);
	for (uint32_t j = 0; j < njobs; j++)
		run_job(j, ncpus);
	fprintf(out, "KOPS end\n");
	finish();
	return 0;
}
