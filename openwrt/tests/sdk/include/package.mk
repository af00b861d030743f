# Stand-in for the SDK's include/package.mk, written for probegate's feed test: each
# BuildPackage makes `prepare-<pkg>`, `compile-<pkg>` and `install-<pkg>`, whose recipes are
# the package's Build/Prepare, Build/Compile and Package/<pkg>/install (into ipkg-<pkg>), so
# `make -n` prints what the real build would run.
PKG_BUILD_DIR ?= $(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
PKG_INSTALL_DIR ?= $(PKG_BUILD_DIR)/ipkg-install

define BuildPackage
$$(eval DEPENDS:=)
$$(eval USERID:=)
$$(eval $$(call Package/$(1)))
PKGINFO_$(1) := DEPENDS $$(DEPENDS) USERID $$(USERID)
prepare-$(1):
	$$(call Build/Prepare)
compile-$(1): prepare-$(1)
	$$(call Build/Compile)
install-$(1): compile-$(1)
	$$(call Package/$(1)/install,$(PKG_BUILD_DIR)/ipkg-$(1))
info-$(1):
	@echo "$(1): $$(PKGINFO_$(1))"
	@echo "$(1): conffiles $$(strip $$(Package/$(1)/conffiles))"
endef
