# diffuse: build the library, the `diffuse` command, the tests and the benchmarks.
#   make            library + command (portable: no -march=native)
#   make test       install missing Debian packages, build, run every test
#   make asan       the test suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   make bench      the benchmark table
#   make NATIVE=1   also tune for this CPU (-march=native); WERROR=1 turns warnings into errors;
#                   DNNL=0 leaves oneDNN out (portable convolutions only)
#   make install    the command, libdiffuse.a and .so, diffuse.h, diffuse.pc and the man page under
#                   $(DESTDIR)$(PREFIX) (PREFIX=/usr/local); make uninstall removes them

MAKEFLAGS += --no-print-directory
CC      ?= cc
BUILD   ?= build
OPT     ?= -O3
# cairo draws the plots (progress.png, the sampler sweep); its headers live under /usr/include/cairo
CAIRO_CFLAGS := $(shell pkg-config --cflags cairo 2>/dev/null || echo -I/usr/include/cairo)
CFLAGS  := -std=c11 $(OPT) -g -Wall -Wextra -Wshadow -Wno-unused-parameter -fopenmp -fno-math-errno \
           -Iinclude -Isrc $(CAIRO_CFLAGS) $(EXTRA_CFLAGS)
ifeq ($(NATIVE),1)
CFLAGS  += -march=native
endif
# oneDNN's convolutions are the fast path; DNNL=0 builds the portable im2col + BLAS path only
DNNL    ?= 1
ifeq ($(DNNL),1)
CFLAGS  += -DHAVE_DNNL
DNNL_LIBS := -ldnnl
endif
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
# what the library needs: the link line of the programs, and Libs.private in diffuse.pc
LIB_DEPS:= -fopenmp $(DNNL_LIBS) -lopenblas -lcairo -lnettle -lcjson -lutf8proc -lpng -ljpeg -lgif -lz -lm
LDLIBS  := $(LIB_DEPS) $(EXTRA_LDLIBS)

# Files named *_real.c are written once for a `real` type and compiled twice: float32 (the library's
# compute) and float64 (the reference path that gradient checks run in).
LIB_SRC  := $(filter-out %_real.c,$(wildcard src/*.c))
REAL_SRC := $(wildcard src/*_real.c)
LIB_OBJ  := $(LIB_SRC:src/%.c=$(BUILD)/src/%.o) \
            $(REAL_SRC:src/%.c=$(BUILD)/src/%_f32.o) $(REAL_SRC:src/%.c=$(BUILD)/src/%_f64.o)
CLI_SRC  := $(wildcard cli/*.c)
# the programs' OpenMP wait-policy restart: process-wide, so the tests and benchmarks link it from cli/
RESTART  := cli/restart.c
TEST_SRC := $(wildcard tests/*.c) fuzz/targets.c $(RESTART)
BENCH_SRC:= $(wildcard bench/*.c)
HDRS     := $(wildcard include/*.h src/*.h tests/*.h cli/*.h fuzz/*.h bench/*.h)

.PHONY: all test asan portable bench deps clean run fuzz fuzz-seeds valgrind shared install uninstall
BENCH_BIN:= $(BENCH_SRC:bench/%.c=$(BUILD)/bench_%)
EXAMPLE_BIN := $(patsubst examples/%.c,$(BUILD)/example_%,$(wildcard examples/*.c))
all: $(BUILD)/libdiffuse.a $(BUILD)/diffuse $(BUILD)/test_diffuse $(BENCH_BIN) $(EXAMPLE_BIN)

$(BUILD)/src/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(BUILD)/src/%_f32.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DDF_REAL_F64=0 -c $< -o $@
$(BUILD)/src/%_f64.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DDF_REAL_F64=1 -c $< -o $@
# the vector kernels: clamps must become selects for the loops to vectorise
$(BUILD)/src/vec.o: CFLAGS += -fno-trapping-math -ffp-contract=fast
$(BUILD)/libdiffuse.a: $(LIB_OBJ)
	ar rcs $@ $^
$(BUILD)/diffuse: $(CLI_SRC) $(BUILD)/libdiffuse.a $(HDRS)
	$(CC) $(CFLAGS) $(CLI_SRC) $(BUILD)/libdiffuse.a $(LDLIBS) -o $@
# The tests link a copy of the training loop built with its fault injection (DF_TEST_HOOKS), ahead of the
# library, so the library and the command carry none of it; and they count the library's allocations
# (tests/alloc_count.c): its calls of malloc & co. are wrapped at link time.
TEST_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=posix_memalign,--wrap=aligned_alloc,--wrap=strdup
$(BUILD)/src/loop_test.o: src/loop.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DDF_TEST_HOOKS -c $< -o $@
$(BUILD)/test_diffuse: $(TEST_SRC) $(BUILD)/src/loop_test.o $(BUILD)/libdiffuse.a $(HDRS)
	$(CC) $(CFLAGS) -DDF_TEST_HOOKS -Ifuzz $(TEST_SRC) $(BUILD)/src/loop_test.o $(BUILD)/libdiffuse.a $(LDLIBS) $(TEST_WRAP) -o $@
$(BUILD)/fuzz_seeds: fuzz/seeds.c $(BUILD)/libdiffuse.a $(HDRS)
	$(CC) $(CFLAGS) $< $(BUILD)/libdiffuse.a $(LDLIBS) -o $@
# each examples/NAME.c is a program using only the public API, build/example_NAME
$(BUILD)/example_%: examples/%.c $(BUILD)/libdiffuse.a include/diffuse.h
	$(CC) $(CFLAGS) $< $(BUILD)/libdiffuse.a $(LDLIBS) -o $@
# each bench/NAME.c is its own program, build/bench_NAME (the peak probe needs fused multiply-adds)
$(BUILD)/bench_unet: CFLAGS += -ffp-contract=fast
$(BUILD)/bench_%: bench/%.c $(RESTART) $(BUILD)/libdiffuse.a $(HDRS)
	$(CC) $(CFLAGS) $< $(RESTART) $(BUILD)/libdiffuse.a $(LDLIBS) -o $@

# ---- installing ----
# The shared library is built from a second set of objects compiled with -fPIC ($(BUILD)/pic); its SONAME
# carries the major version of DIFFUSE_VERSION.
PREFIX  ?= /usr/local
VERSION := $(shell sed -n 's/^\#define DIFFUSE_VERSION "\(.*\)"/\1/p' include/diffuse.h)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))
SHLIB   := $(BUILD)/libdiffuse.so.$(VERSION)
BINDIR   = $(DESTDIR)$(PREFIX)/bin
LIBDIR   = $(DESTDIR)$(PREFIX)/lib
INCDIR   = $(DESTDIR)$(PREFIX)/include
MAN1DIR  = $(DESTDIR)$(PREFIX)/share/man/man1
shared: $(SHLIB)
$(SHLIB): $(LIB_SRC) $(REAL_SRC) $(HDRS)
	$(MAKE) BUILD=$(BUILD)/pic EXTRA_CFLAGS="-fPIC $(EXTRA_CFLAGS)" $(BUILD)/pic/libdiffuse.a
	$(CC) -shared -fPIC -Wl,-soname,libdiffuse.so.$(SOMAJOR) -Wl,--no-undefined \
	  $(LIB_OBJ:$(BUILD)/%=$(BUILD)/pic/%) $(LDLIBS) -o $@
# the man page: the command's --help texts, as roff
$(BUILD)/diffuse.1: $(BUILD)/diffuse
	$(BUILD)/diffuse --man > $@
install: $(BUILD)/diffuse $(BUILD)/libdiffuse.a $(SHLIB) $(BUILD)/diffuse.1
	install -d $(BINDIR) $(LIBDIR)/pkgconfig $(INCDIR) $(MAN1DIR)
	install -m 755 $(BUILD)/diffuse $(BINDIR)/diffuse
	install -m 644 $(BUILD)/libdiffuse.a $(LIBDIR)/libdiffuse.a
	install -m 755 $(SHLIB) $(LIBDIR)/libdiffuse.so.$(VERSION)
	ln -sf libdiffuse.so.$(VERSION) $(LIBDIR)/libdiffuse.so.$(SOMAJOR)
	ln -sf libdiffuse.so.$(SOMAJOR) $(LIBDIR)/libdiffuse.so
	install -m 644 include/diffuse.h $(INCDIR)/diffuse.h
	install -m 644 $(BUILD)/diffuse.1 $(MAN1DIR)/diffuse.1
	printf '%s\n' 'prefix=$(PREFIX)' 'exec_prefix=$${prefix}' 'libdir=$${exec_prefix}/lib' \
	  'includedir=$${prefix}/include' '' 'Name: diffuse' \
	  'Description: Denoising diffusion models in plain C' 'Version: $(VERSION)' \
	  'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -ldiffuse' 'Libs.private: $(LIB_DEPS)' \
	  > $(LIBDIR)/pkgconfig/diffuse.pc
uninstall:
	rm -f $(BINDIR)/diffuse $(LIBDIR)/libdiffuse.a $(LIBDIR)/libdiffuse.so.$(VERSION) \
	  $(LIBDIR)/libdiffuse.so.$(SOMAJOR) $(LIBDIR)/libdiffuse.so $(INCDIR)/diffuse.h \
	  $(LIBDIR)/pkgconfig/diffuse.pc $(MAN1DIR)/diffuse.1

deps:
	@sh scripts/deps.sh

# The README's test command. Order: packages, a warnings-as-errors build, the suite, PyTorch parity, the
# portable build, the suite under ASan+UBSan, memcheck on a short run, every fuzz target for a while.
CI_FUZZ_SECONDS ?= 30
test: deps
	$(MAKE) WERROR=1 all
	$(BUILD)/test_diffuse
	sh tests/install.sh $(BUILD)
	sh tests/torch_parity.sh
	$(MAKE) portable
	$(MAKE) asan
	$(MAKE) valgrind
	$(MAKE) fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)

# the build without oneDNN (im2col + BLAS convolutions only) still builds and matches the golden files
portable:
	$(MAKE) BUILD=build-portable DNNL=0 WERROR=1 build-portable/test_diffuse build-portable/diffuse
	build-portable/test_diffuse golden

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 WERROR=1 \
	  EXTRA_CFLAGS="-fsanitize=address,undefined,float-cast-overflow -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  EXTRA_LDLIBS="-fsanitize=address,undefined,float-cast-overflow" build-asan/test_diffuse build-asan/diffuse
	ASAN_OPTIONS=detect_leaks=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  DIFFUSE_QUICK=1 build-asan/test_diffuse

# memcheck on a short train-and-sample run (portable kernels: memcheck cannot follow oneDNN's JIT code)
valgrind:
	$(MAKE) BUILD=build-valgrind OPT=-O1 DNNL=0 WERROR=1 build-valgrind/diffuse
	sh tests/valgrind.sh build-valgrind

# Fuzzing (clang's libFuzzer with AddressSanitizer and UndefinedBehaviorSanitizer): every target for
# FUZZ_SECONDS, two at a time, starting from fuzz/corpus/<target> and the kept crashes in fuzz/regress/.
# New inputs go to build-fuzz/corpus/<target>; a crash fails the run and is saved in build-fuzz/crashes/.
FUZZ_TARGETS := safetensors unet_config scheduler_config idx cifar png jpeg checkpoint training_state npy ref_features bpd_state \
                tokenizer text_config metadata
FUZZ_SECONDS ?= 60
FUZZ_FLAGS   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
fuzz:
	$(MAKE) BUILD=build-fuzz CC=clang OPT=-O1 \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link $(FUZZ_FLAGS)" EXTRA_LDLIBS="$(FUZZ_FLAGS)" build-fuzz/libdiffuse.a
	$(MAKE) -j2 $(addprefix build-fuzz/fuzz_,$(FUZZ_TARGETS))
	$(MAKE) -j2 $(addprefix fuzz-run-,$(FUZZ_TARGETS))
build-fuzz/fuzz_%: fuzz/entry.c fuzz/targets.c fuzz/fuzz.h build-fuzz/libdiffuse.a
	clang -std=c11 -O1 -g -Iinclude -Isrc -Ifuzz -fopenmp -fsanitize=fuzzer $(FUZZ_FLAGS) -DFUZZ_TARGET=$* \
	  fuzz/entry.c fuzz/targets.c build-fuzz/libdiffuse.a $(LDLIBS) -o $@
fuzz-run-%: build-fuzz/fuzz_%
	@mkdir -p build-fuzz/corpus/$* build-fuzz/crashes build-fuzz/logs fuzz/regress/$*
	@OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 build-fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) \
	  -timeout=20 -rss_limit_mb=4096 -malloc_limit_mb=4096 -dict=fuzz/fuzz.dict \
	  -artifact_prefix=build-fuzz/crashes/$*- build-fuzz/corpus/$* fuzz/corpus/$* fuzz/regress/$* \
	  > build-fuzz/logs/$*.log 2>&1 || { tail -40 build-fuzz/logs/$*.log; echo "fuzz $*: FAILED"; exit 1; }
	@echo "fuzz $*: $$(grep -o 'Done [0-9]* runs in [0-9]* second' build-fuzz/logs/$*.log), no failure"
# rewrite the starting corpus (small valid files of every kind)
fuzz-seeds: $(BUILD)/fuzz_seeds
	$(BUILD)/fuzz_seeds fuzz/corpus

bench: deps all
	$(BUILD)/bench_unet --scaling --svg $(BUILD)/scaling.svg
	$(BUILD)/bench_eval
	$(BUILD)/bench_inception
	$(BUILD)/bench_text

# The README's main command, the recipe that scores best in 20 minutes (docs/quality.md): the small preset
# (one resnet per level: more steps in the time), class-conditional, EDM's objective, a constant learning
# rate with the weights' moving average; FD and KID every 500 steps, not counted in the 20 minutes. Then
# DPM-Solver++ (2M) with classifier-free guidance at noise levels sigma <= 3 only (guidance at high noise
# costs variety).
# scripts/ablations.sh reads the parts through `make -s print-NAME`.
RUN_COND = --classes --edm
RUN_OPTIM = --lr 3e-4 --warmup 100 --lr-decay constant
RUN_TRAIN = --preset fmnist-xs $(RUN_COND) $(RUN_OPTIM) --minutes 20 --eval-every 500
RUN_SAMPLER = --sampler dpmpp-2m --steps 20 --guidance 2.5 --guidance-interval 0,3
RUN_SAMPLE = --n 64 $(RUN_SAMPLER)

run: deps all
	@echo "make run: train fmnist-xs class-conditionally with EDM's objective on Fashion-MNIST for 20 minutes (runs/make-run), then draw 64 garments with DPM-Solver++ (2M), 20 steps, guidance 2.5 below sigma 3 (samples.png, denoising.gif)"
	rm -rf runs/make-run
	$(BUILD)/diffuse train $(RUN_TRAIN) --out runs/make-run
	$(BUILD)/diffuse sample runs/make-run $(RUN_SAMPLE) --out samples.png --animate denoising.gif

# a variable's value, for scripts: make -s print-RUN_OPTIM
print-%:
	@echo '$($*)'

clean:
	rm -rf build build-asan build-portable build-fuzz build-valgrind
