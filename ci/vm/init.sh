#!/bin/sh
# /init of the cgroup v2 lane's initramfs (busybox sh, PID 1 in the VM). ci/vm/run-lane.sh builds the
# initramfs around it: /bin/busybox, /modules.list (kernel modules in load order), /lib/modules/...
#
# Mounts the host's root read-only over 9p at /newroot, gives it its own proc, sys, dev, a cgroup2
# at /sys/fs/cgroup with every controller, and tmpfs where the tests write, then runs
# ci/vm/guest.sh (from the host's checkout) in it and powers off. The kernel command line carries
# rl.src=, rl.venv=, rl.user=. The last line the host looks for is "RL-VM-RESULT: rc=N".

/bin/busybox --install -s /bin
export PATH=/bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
read -r up _ </proc/uptime
echo "RL-VM: init started at ${up}s"

finish() {
    echo "RL-VM-RESULT: rc=$1"
    sync
    poweroff -f
    echo o >/proc/sysrq-trigger
    sleep 5
}

while read -r m; do
    insmod "/lib/modules/$m" || echo "RL-VM: insmod $m failed"
done </modules.list

src=""
venv=""
user=""
read -r cmdline </proc/cmdline
for word in $cmdline; do
    case "$word" in
        rl.src=*) src="${word#rl.src=}" ;;
        rl.venv=*) venv="${word#rl.venv=}" ;;
        rl.user=*) user="${word#rl.user=}" ;;
    esac
done
if [ -z "$src" ] || [ -z "$venv" ] || [ -z "$user" ]; then
    echo "RL-VM: rl.src=, rl.venv= and rl.user= must be on the kernel command line"
    finish 2
fi

mkdir -p /newroot
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose host /newroot; then
    echo "RL-VM: cannot mount the host's root over 9p"
    finish 3
fi
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm 2>/dev/null
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
# Every controller is on cgroup v2: nothing mounts a v1 hierarchy here.
if ! mount -t cgroup2 -o nsdelegate cgroup2 /newroot/sys/fs/cgroup; then
    echo "RL-VM: cannot mount cgroup2"
    finish 4
fi
# Writable places; /var/tmp and the home directory only when they hold neither checkout nor venv.
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
for dir in /var/tmp "$(awk -F: -v u="$user" '$1 == u { print $6 }' /newroot/etc/passwd)"; do
    if [ -z "$dir" ] || [ ! -d "/newroot$dir" ]; then
        continue
    fi
    case "$src/ $venv/" in
        "$dir"/* | *" $dir"/*) continue ;;
    esac
    mount -t tmpfs -o mode=1777 tmpfs "/newroot$dir"
done

# Put the host's root over / (as switch_root does) rather than only chrooting into /newroot: the kernel
# refuses unshare(CLONE_NEWUSER) to a chrooted process (EPERM), and rl's tests make user namespaces.
# This shell keeps the initramfs as its own root, so finish() still finds busybox.
cd /newroot || finish 3
if ! mount --move /newroot /; then
    echo "RL-VM: cannot move the host's root over /"
    finish 3
fi
chroot . /bin/bash "$src/ci/vm/guest.sh" "$src" "$venv" "$user"
finish $?
