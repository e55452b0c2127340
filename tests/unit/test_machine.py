"""recflow.ops.machine: what a benchmark records about the host it ran on."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from recflow.ops.machine import (
    code_label,
    cpu_identity,
    describe,
    host_costs,
    kernel_identity,
    results_header,
    same_host,
    summary,
)

# Two processors as a KVM guest on these hosts prints them: the same name for different CPUs.
CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC
stepping\t: 1
cpu MHz\t\t: 2596.140

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: Other
"""


def test_cpu_identity_reads_the_first_processor_with_numbers_as_numbers() -> None:
    assert cpu_identity(CPUINFO) == {
        "cpu": "AMD EPYC",
        "cpu_vendor": "AuthenticAMD",
        "cpu_family": 25,
        "cpu_model": 17,
        "cpu_stepping": 1,
        "cpu_mhz": 2596.14,
    }


def test_summary_names_family_model_and_clock_beside_the_name() -> None:
    info = {**cpu_identity(CPUINFO), "host": "vm", "cores": 2, "memory_gib": 23.5}
    info |= {"arch": "x86_64", "python": "3.11.7"}
    assert summary(info) == (
        "vm: AMD EPYC (family 25, model 17, 2596 MHz), 2 cores, 24 GiB, x86_64, Python 3.11.7"
    )


def test_summary_of_an_older_record_leaves_out_what_it_lacks() -> None:
    assert summary({"cores": 2, "python": "3.11.7"}) == "unknown CPU, 2 cores, Python 3.11.7"


def test_describe_names_this_host_and_the_packages_asked_for() -> None:
    info = describe("pytest", "no-such-package-recflow")
    assert info["cores"] and info["memory_gib"] > 0 and info["python"]
    assert info["pytest"] and info["no_such_package_recflow"] is None
    # every bench script records the kernel's side too, through describe() alone
    assert isinstance(info["cpu_mitigations"], dict)


def test_same_host_needs_the_same_cpu_and_size_and_a_record_that_names_its_cpu() -> None:
    here = {**cpu_identity(CPUINFO), "cores": 2, "memory_gib": 23.5, "arch": "x86_64"}
    assert same_host({**here, "cpu_mhz": 3000.0, "host": "other", "memory_gib": 23.4}, here)
    assert not same_host({**here, "cpu_family": 26, "cpu_model": 2}, here)
    assert not same_host({**here, "cores": 4}, here)
    assert not same_host({"cpu": "AMD EPYC", "cores": 2}, here)  # an older record
    assert not same_host(None, here)


def test_kernel_identity_names_the_clock_source_and_the_mitigations_applied(tmp_path: Path) -> None:
    clock = tmp_path / "devices/system/clocksource/clocksource0"
    clock.mkdir(parents=True)
    (clock / "current_clocksource").write_text("tsc\n")
    vulnerabilities = tmp_path / "devices/system/cpu/vulnerabilities"
    vulnerabilities.mkdir(parents=True)
    (vulnerabilities / "spec_rstack_overflow").write_text("Vulnerable: Safe RET, no microcode\n")
    (vulnerabilities / "meltdown").write_text("Not affected\n")
    (vulnerabilities / "spectre_v2").write_text("Mitigation: Retpolines\n")
    assert kernel_identity(tmp_path) == {
        "clocksource": "tsc",
        "cpu_mitigations": {
            "spec_rstack_overflow": "Vulnerable: Safe RET, no microcode",
            "spectre_v2": "Mitigation: Retpolines",
        },
    }


def test_kernel_identity_without_sys_says_nothing_it_cannot_read(tmp_path: Path) -> None:
    assert kernel_identity(tmp_path) == {"cpu_mitigations": {}}


def test_host_costs_measures_a_loop_a_system_call_and_a_thread_hand_off() -> None:
    costs = host_costs(calls=2_000, trips=200, rounds=3)
    assert set(costs) == {"python_loop_ms", "syscall_ns", "thread_handoff_us"}
    # Durations only, not compared with each other or a bound: no clock decides this test.
    assert all(isinstance(v, float) and v >= 0 for v in costs.values())


def test_code_label_names_the_commit_and_any_uncommitted_tracked_file(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "model.py").write_text("a = 1\n")
    git("add", "model.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    commit = subprocess.run(
        ["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    (tmp_path / "results.json").write_text("{}")  # untracked output: not code
    assert code_label(tmp_path) == commit[:12]
    (tmp_path / "model.py").write_text("a = 2\n")
    assert code_label(tmp_path) == f"{commit[:12]}+uncommitted (model.py)"


def test_code_label_outside_a_checkout_is_unknown(tmp_path: Path) -> None:
    assert code_label(tmp_path) == "unknown"


def test_results_header_names_the_command_date_and_machine() -> None:
    header = results_header("numpy", argv=["bench/x.py", "--out", "r"])
    assert header["command"] == "python bench/x.py --out r"
    assert header["date"].endswith("+00:00")  # UTC, seconds
    assert header["machine_info"]["numpy"] == np.__version__
    assert header["machine"] == summary(header["machine_info"])
