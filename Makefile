# Everything runs from a project venv (.venv): Debian's python3 is externally
# managed (PEP 668) and refuses `pip install` outside one. PYTHON is the
# interpreter that makes the venv: python3 first on PATH (Debian's own, or any
# other Python >= 3.11).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: run test deps lint bench man install

# Install tarry into the venv and run it with its embedded defaults.
run: $(PY)
	$(PY) -m pip install -q --disable-pip-version-check ".[all]"
	$(VENV)/bin/tarry serve

# Install everything the tests need (Debian clients, Python packages), then run them.
test: deps
	$(PY) -m ruff check .
	$(PY) -m mypy
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -n 2 --dist loadgroup

deps: $(PY)
	PYTHON=$(PY) ./scripts/install-test-deps.sh

lint: $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: $(PY)
	$(PY) bench/run.py -n 10000 --window 60

# The venv itself; Debian ships venv and ensurepip apart, as python3-venv.
$(PY):
	@$(PYTHON) -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11), sys.version' 2>/dev/null || { \
	  echo "installing python3-venv (Debian) for $(PYTHON)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv >/dev/null; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

# The man page, from tarry's own --help texts (committed; a test keeps it in sync).
man: $(PY)
	$(PY) scripts/gen-manpage.py > man/tarry.1.tmp && mv man/tarry.1.tmp man/tarry.1

# What a package would install besides the Python code (pip install puts the
# `tarry` script in $(PREFIX)/bin): the man page, the documents the units'
# Documentation= names, the plain systemd service, and the socket-activated
# pair as an example beside the documents. Paths follow PREFIX; DESTDIR stages.
PREFIX ?= /usr/local
MANDIR ?= $(PREFIX)/share/man/man1
DOCDIR ?= $(PREFIX)/share/doc/tarry
UNITDIR ?= $(PREFIX)/lib/systemd/system
install:
	install -d $(DESTDIR)$(MANDIR) $(DESTDIR)$(DOCDIR)/socket-activated $(DESTDIR)$(UNITDIR)
	install -m 644 man/tarry.1 $(DESTDIR)$(MANDIR)/tarry.1
	install -m 644 README.md docs/*.md $(DESTDIR)$(DOCDIR)/
	sed 's|/usr/local|$(PREFIX)|g' contrib/systemd/tarry.service > $(DESTDIR)$(UNITDIR)/tarry.service
	for u in tarry.service tarry.socket; do \
	  sed 's|/usr/local|$(PREFIX)|g' contrib/systemd/socket-activated/$$u \
	    > $(DESTDIR)$(DOCDIR)/socket-activated/$$u; done
	chmod 644 $(DESTDIR)$(UNITDIR)/tarry.service $(DESTDIR)$(DOCDIR)/socket-activated/*
