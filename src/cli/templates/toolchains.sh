# Where the guest toolchains are: `arrpc-host new` recorded the toolchains
# folder of the arrpc-host checkout it found (handlers/install-toolchains.sh
# fills its virtualenv), or nothing when it found none; tools on PATH serve
# when that folder lacks them.
tools={{tools}}
if [ -n "$tools" ]; then
    PATH="$tools/venv/bin:$PATH"
fi
# What installs this skeleton's tools, said when one is missing.
install={{install}}
# Stops the build, saying that $1 is missing and what installs it.
missing() {
    echo "{{name}}/build.sh: $1 not found; install it with: $install" >&2
    exit 127
}
# Stops the build unless the command $1 is found.
need() {
    command -v "$1" >/dev/null 2>&1 || missing "$1"
}
