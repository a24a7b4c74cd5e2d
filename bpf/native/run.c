/* kops_native_run PACKET [prog...]: print "<prog> <result hex>" for every
 * native kernel (or the named ones) on the packet file. Used by
 * bpf/check_native.sh to compare with the kernel's kops_result. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "native.h"

int main(int argc, char **argv)
{
	static uint8_t buf[65536];
	size_t len;
	FILE *f;
	int status = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s PACKET [prog...]\n", argv[0]);
		return 2;
	}
	f = fopen(argv[1], "rb");
	if (!f) {
		perror(argv[1]);
		return 2;
	}
	len = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	for (int a = 2; a < argc || a == 2; a++) {
		int found = 0;
		for (const struct kops_native_entry *e = kops_native_table; e->prog; e++) {
			if (argc > 2 && strcmp(e->prog, argv[a]) != 0)
				continue;
			printf("%s 0x%016llx\n", e->prog, (unsigned long long)e->fn(buf, len));
			found = 1;
		}
		if (argc > 2 && !found) {
			fprintf(stderr, "no native kernel for program '%s'\n", argv[a]);
			status = 1;
		}
		if (argc == 2)
			break;
	}
	return status;
}
