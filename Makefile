# tlsk - one plain GNU Makefile.
#
#   make                 libtlsk.so.0 and libtlsk.a in build/, and the tools
#   make test            native tier, then the real-kernel tier in user-mode Linux
#   make check           native tier only
#   make check-ktls      real-kernel tier only (user-mode Linux with tls.ko)
#   make SANITIZE=address,undefined test
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make run             serve the current folder over HTTPS
#   make soak            load and fault suite: 2,000 connections, 60 s per server
#   make clean
#   V=1 shows commands.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
MANDIR ?= $(PREFIX)/share/man

VERSION := 0.1.0
SONAME := libtlsk.so.0

CC ?= cc
B := build$(if $(SANITIZE),-san)
PKG_CFLAGS := $(shell pkg-config --cflags openssl libmnl 2>/dev/null)
SSL_LIBS := $(shell pkg-config --libs openssl 2>/dev/null || echo -lssl -lcrypto)
MNL_LIBS := $(shell pkg-config --libs libmnl 2>/dev/null || echo -lmnl)
# The tools' socket activation and readiness (tools/common/service.c); never libtlsk.
SYSTEMD_LIBS := $(shell pkg-config --libs libsystemd 2>/dev/null || echo -lsystemd)
# tlsk-serve's session store on Redis (include/tlsk/redis.h, hiredis); never libtlsk.
HIREDIS_LIBS := $(shell pkg-config --libs hiredis 2>/dev/null || echo -lhiredis)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-missing-field-initializers
ifeq ($(CI),true)
WERROR ?= -Werror
endif
CFLAGS ?= -O2 -g
# CPPFLAGS and LDFLAGS from the environment (dpkg-buildflags' hardening) go on top.
ALL_CFLAGS := -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(WERROR) $(CPPFLAGS) $(CFLAGS) \
              -Iinclude -Ilib -Ikmod-helpers $(PKG_CFLAGS) -MMD -MP
LDLIBS := $(SSL_LIBS) -lpthread

ifneq ($(SANITIZE),)
ALL_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
SAN_LDFLAGS := -fsanitize=$(SANITIZE)
endif

ifeq ($(V),1)
Q :=
else
Q := @
endif

LIB_SRC := $(wildcard lib/*.c) $(wildcard kmod-helpers/*.c)
LIB_OBJ := $(patsubst %.c,$(B)/%.o,$(LIB_SRC))

# The kTLS diagnostics (/proc/net/tls_stat, inet_diag, ethtool netlink; kmod-helpers/diag/):
# a static library for tlsk-stat and the tests, never part of libtlsk.  Nothing libtlsk exports
# reaches them, and only they need libmnl.  Not installed (tlsk-stat is).
DIAG_SRC := $(wildcard kmod-helpers/diag/*.c)
DIAG_OBJ := $(patsubst %.c,$(B)/%.o,$(DIAG_SRC))
DIAG_LIB := $(B)/libtlsk-diag.a
DIAG_CFLAGS := -Ikmod-helpers/diag

TEST_LIB_SRC := $(wildcard tests/lib/*.c)
TEST_LIB_OBJ := $(patsubst %.c,$(B)/%.o,$(TEST_LIB_SRC))
TEST_SRC := $(wildcard tests/unit/test_*.c) $(wildcard tests/ktls/test_*.c) \
            $(wildcard tests/interop/test_*.c)
TEST_BIN := $(patsubst %.c,$(B)/%,$(TEST_SRC))
TEST_HELPERS_SRC := $(wildcard tests/helpers/*.c)
TEST_HELPERS := $(patsubst %.c,$(B)/%,$(TEST_HELPERS_SRC))

TOOL_SRC := $(wildcard tools/*.c)
TOOL_COMMON_SRC := $(wildcard tools/common/*.c)
TOOL_COMMON_OBJ := $(patsubst %.c,$(B)/%.o,$(TOOL_COMMON_SRC))
TOOLS := $(patsubst tools/%.c,$(B)/tools/%,$(TOOL_SRC))

.PHONY: all lib tests tools check check-ktls test deps install uninstall clean run fuzz bench \
        analyze format soak

all: lib tools

lib: $(B)/$(SONAME) $(B)/libtlsk.a $(B)/tlsk.pc

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(B)/$(SONAME): $(LIB_OBJ) lib/tlsk.map
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/tlsk.map \
	    -Wl,--no-undefined $(SAN_LDFLAGS) $(LDFLAGS) -o $@ $(LIB_OBJ) $(LDLIBS)
	$(Q)ln -sf $(SONAME) $(B)/libtlsk.so

$(B)/libtlsk.a: $(LIB_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(DIAG_LIB): $(DIAG_OBJ)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

# Regenerated on every build and install, so it names the PREFIX actually used.
.PHONY: $(B)/tlsk.pc
$(B)/tlsk.pc:
	@mkdir -p $(B)
	$(Q)printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	    'Name: tlsk' 'Description: TLS for C with the record layer in the kernel (kTLS)' \
	    'Version: $(VERSION)' 'Requires.private: openssl' \
	    'Cflags: -I$${includedir}' 'Libs: -L$${libdir} -ltlsk' > $@

# Tests and tools link the static library: tests may reach internal (tlsk__) functions.
# Every test may use the diagnostics; of the tools, tlsk-stat does.
# The libuv adapter's test also links libuv (Debian libuv1-dev).
UV_LIBS := $(shell pkg-config --libs libuv 2>/dev/null || echo -luv)
$(B)/tests/unit/test_uv: EXTRA_LIBS = $(UV_LIBS)
# The Redis session store adapter's test links hiredis (Debian libhiredis-dev).
$(B)/tests/unit/test_redis: EXTRA_LIBS = $(HIREDIS_LIBS)
# test_userio counts syscalls by wrapping read(2), write(2), send(2); exported, libcrypto calls them too.
$(B)/tests/unit/test_userio: EXTRA_LIBS = -Wl,--export-dynamic

$(B)/tests/%: tests/%.c $(B)/libtlsk.a $(DIAG_LIB) $(TEST_LIB_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(ALL_CFLAGS) $(DIAG_CFLAGS) -Itests/lib $(SAN_LDFLAGS) -o $@ $< $(TEST_LIB_OBJ) \
	    $(DIAG_LIB) $(B)/libtlsk.a $(LDLIBS) $(MNL_LIBS) $(EXTRA_LIBS)

$(B)/tools/tlsk-stat: $(DIAG_LIB)
$(B)/tools/tlsk-stat: TOOL_DIAG = $(DIAG_CFLAGS) $(DIAG_LIB) $(MNL_LIBS)

$(B)/tools/%: tools/%.c $(B)/libtlsk.a $(TOOL_COMMON_OBJ)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TOOL    $@")
	$(Q)$(CC) $(ALL_CFLAGS) -Itools/common $(SAN_LDFLAGS) $(LDFLAGS) -o $@ $< $(TOOL_COMMON_OBJ) \
	    $(TOOL_DIAG) $(B)/libtlsk.a $(LDLIBS) $(SYSTEMD_LIBS) $(HIREDIS_LIBS)

tests: $(TEST_BIN) $(TEST_HELPERS) tools

tools: $(TOOLS)

deps:
	$(Q)scripts/deps.sh

# Native tier: every test program and script, the kernel path reported as unavailable.
check: deps lib tests
	$(Q)TLSK_BUILD=$(B) TLSK_SANITIZE=$(SANITIZE) scripts/run-tests.sh native

# Real-kernel tier: the same programs inside user-mode Linux with tls.ko.
check-ktls: deps lib tests
	$(Q)TLSK_BUILD=$(B) TLSK_SANITIZE=$(SANITIZE) scripts/run-tests.sh ktls

test: deps lib tests
	$(Q)TLSK_BUILD=$(B) TLSK_SANITIZE=$(SANITIZE) scripts/run-tests.sh all

run: deps all
	$(Q)TLSK_ROOT_DIR="$(CURDIR)" scripts/run-serve.sh

install: lib tools $(B)/tlsk.pc
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	install -m 0755 $(B)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libtlsk.so
	install -m 0644 $(B)/libtlsk.a $(DESTDIR)$(LIBDIR)/libtlsk.a
	install -m 0644 include/tlsk.h $(DESTDIR)$(INCLUDEDIR)/tlsk.h
	install -d $(DESTDIR)$(INCLUDEDIR)/tlsk
	install -m 0644 include/tlsk/*.h $(DESTDIR)$(INCLUDEDIR)/tlsk/
	install -m 0644 $(B)/tlsk.pc $(DESTDIR)$(PKGCONFIGDIR)/tlsk.pc
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 kmod-helpers/tlsk-modprobe $(DESTDIR)$(BINDIR)/tlsk-modprobe
	for t in $(TOOLS); do install -m 0755 $$t $(DESTDIR)$(BINDIR)/; done
	install -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	for u in systemd/*.service systemd/*.socket; do \
	    sed 's|/usr/bin/tlsk-|$(BINDIR)/tlsk-|' $$u > $(DESTDIR)$(SYSTEMDUNITDIR)/$${u#systemd/} && \
	    chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/$${u#systemd/} || exit 1; done
	install -m 0644 systemd/tlsk.sysusers $(DESTDIR)$(SYSUSERSDIR)/tlsk.conf
	for s in 1 7 8; do install -d $(DESTDIR)$(MANDIR)/man$$s && \
	    install -m 0644 man/*.$$s $(DESTDIR)$(MANDIR)/man$$s/ || exit 1; done

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/libtlsk.so \
	    $(DESTDIR)$(LIBDIR)/libtlsk.a $(DESTDIR)$(INCLUDEDIR)/tlsk.h \
	    $(patsubst include/%,$(DESTDIR)$(INCLUDEDIR)/%,$(wildcard include/tlsk/*.h)) \
	    $(DESTDIR)$(PKGCONFIGDIR)/tlsk.pc $(DESTDIR)$(BINDIR)/tlsk-modprobe \
	    $(patsubst $(B)/tools/%,$(DESTDIR)$(BINDIR)/%,$(TOOLS)) \
	    $(patsubst systemd/%,$(DESTDIR)$(SYSTEMDUNITDIR)/%,$(wildcard systemd/*.service systemd/*.socket)) \
	    $(DESTDIR)$(SYSUSERSDIR)/tlsk.conf \
	    $(foreach m,$(wildcard man/*.[178]),$(DESTDIR)$(MANDIR)/man$(subst .,,$(suffix $(m)))/$(notdir $(m)))
	rmdir --ignore-fail-on-non-empty $(DESTDIR)$(INCLUDEDIR)/tlsk 2>/dev/null || true

# The benchmark suite (bench/README.md): every scenario against nginx / haproxy side by side,
# results and plots in bench/results/.  bench/serve.sh alone is the detailed bulk download.
bench: all
	$(Q)bench/suite.sh

# The load and fault suite at full scale (tests/interop/test_soak.c, which make test runs
# small): SOAK_CONNS concurrent connections, two rounds of SOAK_SECS seconds per server
# (tlsk-serve, the evented echo server), natively.
SOAK_CONNS ?= 2000
SOAK_SECS ?= 30
soak: lib tests
	$(Q)scripts/gen-fixtures.sh "$(CURDIR)/$(B)/fixtures" >/dev/null
	$(Q)TLSK_FIXTURES="$(CURDIR)/$(B)/fixtures/rsa" TLSK_FIXTURES_EC="$(CURDIR)/$(B)/fixtures/ec" \
	    TLSK_ROOT="$(CURDIR)" TLSK_BUILD_DIR="$(CURDIR)/$(B)" TLSK_SOAK_CONNS=$(SOAK_CONNS) \
	    TLSK_SOAK_SECS=$(SOAK_SECS) $(B)/tests/interop/test_soak
	$(Q)TLSK_FIXTURES="$(CURDIR)/$(B)/fixtures/rsa" TLSK_ROOT="$(CURDIR)" \
	    TLSK_BUILD_DIR="$(CURDIR)/$(B)" TLSK_FLEET_SECS=$(SOAK_SECS) tests/interop/fleet.t

# libFuzzer targets for every parser (clang with libclang-rt; tests/fuzz/run.sh): the kTLS
# diagnostics, tlsk-serve's HTTP parsing, the bridge's record open/seal, the server's
# ClientHello handling.  FUZZ_SECONDS per target; FUZZ_TARGETS="fuzz_http ..." for a subset.
fuzz:
	$(Q)FUZZ_OUT=$(B)/fuzz FUZZ_TARGETS="$(FUZZ_TARGETS)" tests/fuzz/run.sh $(or $(FUZZ_SECONDS),30)

analyze:
	cppcheck --quiet --enable=warning,portability --error-exitcode=1 -Iinclude -Ilib \
	    -Ikmod-helpers -Ikmod-helpers/diag lib kmod-helpers

format:
	clang-format -i include/*.h lib/*.[ch] kmod-helpers/*.[ch] kmod-helpers/diag/*.[ch] \
	    tests/*/*.[ch] tools/*.c

clean:
	rm -rf build build-san

-include $(shell find $(B) -type f -name '*.d' 2>/dev/null)
.SECONDARY:
