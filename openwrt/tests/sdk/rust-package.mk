# Stand-in for the packages feed's lang/rust/rust-package.mk, written for probegate's feed
# test from its documented interface (RUST_PKG_FEATURES, Build/Compile/Cargo with a path and
# extra arguments, CARGO_PKG_VARS, CARGO_RUSTFLAGS, RUST_ARCH_DEPENDS): the cargo command it
# runs, not the real file (which is GPL-2.0 and not kept here).
RUST_ARCH_DEPENDS:=@(aarch64||arm||i386||i686||mips||mipsel||mips64||mips64el||powerpc64||riscv64||x86_64)
CARGO_RUSTFLAGS+=-Ctarget-feature=-crt-static
CARGO_PKG_PROFILE:=stripped
CARGO_PKG_VARS=RUSTFLAGS="$(CARGO_RUSTFLAGS)" CC=$(HOSTCC_NOCACHE)

define Build/Compile/Cargo
	$(CARGO_PKG_VARS) cargo install -v --profile $(CARGO_PKG_PROFILE) \
		$(if $(strip $(RUST_PKG_FEATURES)),--features "$(strip $(RUST_PKG_FEATURES))") \
		--root $(PKG_INSTALL_DIR) --path "$(PKG_BUILD_DIR)/$(strip $(1))" --locked $(2)
endef
