# Stand-in for the OpenWrt SDK's rules.mk, written for probegate's feed test: the variables a
# package Makefile reads, with a mips_24kc (ath79) SDK's values unless the command line says.
ARCH ?= mips
ARCH_PACKAGES ?= mips_24kc
BUILD_DIR ?= $(TOPDIR)/build_dir/target-$(ARCH)
STAGING_DIR ?= $(TOPDIR)/staging_dir/target-$(ARCH)
INCLUDE_DIR := $(TOPDIR)/include
HOSTCC_NOCACHE := gcc
CP := cp -fpR
RM := rm -f
INSTALL_DIR := install -d -m0755
INSTALL_BIN := install -m0755
INSTALL_CONF := install -m0600
INSTALL_DATA := install -m0644
