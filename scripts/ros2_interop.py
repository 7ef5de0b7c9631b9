#!/usr/bin/env python3
"""Python DDS peer for reflexd's ROS 2 transport interop test.

Speaks ROS 2 on the wire without a ROS 2 install: Eclipse Cyclone DDS from PyPI
(`cyclonedds`, made by scripts/venv-ros2.sh) with the ROS 2 message types written
out below as IDL structs. A ROS 2 topic `/foo` is the DDS topic `rt/foo`; a ROS 2
type `pkg/msg/T` is the DDS type `pkg::msg::dds_::T_`.

Every struct is @final: reflexd's DDS stack (RustDDS under ros2-client) speaks
XCDR1 only, and cyclonedds declares @appendable/@mutable structs as XCDR2, which
never matches it. Writers and readers also ask for XCDR1 explicitly (QoS
DataRepresentation), and self-test checks every sample's encapsulation header.

Modes (domain id from --domain, default 0):
  robot        a tiny simulated robot for reflexd: publishes StepInfo + JointState at
               --rate, records the actions (Float64MultiArray) and TransitionBatches
               reflexd sends back, writes them all as JSON to --out.
  string-echo  std_msgs/String sanity check: echoes every string on --in-topic to
               --out-topic with the prefix "echo: ".
  self-test    a writer and a reader of every type here in this one process; checks
               each sample comes back equal. No Rust side needed.

Run DDS tests inside a network namespace, so that discovery multicast never leaves
the machine:
  unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
    ip route add 224.0.0.0/4 dev lo; PYTHON scripts/ros2_interop.py self-test'
"""

import argparse
import json
import math
import struct
import sys
import time
from dataclasses import asdict, dataclass

from cyclonedds.core import InstanceState, ReadCondition, SampleState, ViewState, WaitSet
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl import annotations as ann
from cyclonedds.idl import types as t
from cyclonedds.internal import InvalidSample
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

# ---------------------------------------------------------------------------
# IDL types. Field order and CDR types follow the .msg files exactly:
# float32 -> t.float32, float64 -> float, uintN -> t.uintN, int32 -> t.int32,
# string -> str, bool -> bool, T[] -> t.sequence[T], nested message -> its struct.
# IdlStruct subclasses must be dataclasses themselves (@dataclass); cyclonedds'
# default extensibility is already final, @ann.final says so explicitly.
# ---------------------------------------------------------------------------


@ann.final
@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: t.int32
    nanosec: t.uint32


@ann.final
@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time
    frame_id: str


@ann.final
@dataclass
class JointState(IdlStruct, typename="sensor_msgs::msg::dds_::JointState_"):
    header: Header
    name: t.sequence[str]
    position: t.sequence[float]
    velocity: t.sequence[float]
    effort: t.sequence[float]


@ann.final
@dataclass
class MultiArrayDimension(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayDimension_"):
    label: str
    size: t.uint32
    stride: t.uint32


@ann.final
@dataclass
class MultiArrayLayout(IdlStruct, typename="std_msgs::msg::dds_::MultiArrayLayout_"):
    dim: t.sequence[MultiArrayDimension]
    data_offset: t.uint32


@ann.final
@dataclass
class Float64MultiArray(IdlStruct, typename="std_msgs::msg::dds_::Float64MultiArray_"):
    layout: MultiArrayLayout
    data: t.sequence[float]


@ann.final
@dataclass
class String(IdlStruct, typename="std_msgs::msg::dds_::String_"):
    data: str


WIRE_VERSION = 1  # the reflex_msgs WIRE_VERSION constant


@ann.final
@dataclass
class StepInfo(IdlStruct, typename="reflex_msgs::msg::dds_::StepInfo_"):
    wire_version: t.uint16
    robot_id: str
    stamp_ns: t.uint64
    reward: t.float32
    terminated: bool
    truncated: bool


ACTION_KIND_DISCRETE = 0
ACTION_KIND_CONTINUOUS = 1


@ann.final
@dataclass
class Action(IdlStruct, typename="reflex_msgs::msg::dds_::Action_"):
    kind: t.uint8
    index: t.uint32
    values: t.sequence[t.float32]


@ann.final
@dataclass
class Transition(IdlStruct, typename="reflex_msgs::msg::dds_::Transition_"):
    wire_version: t.uint16
    robot_id: str
    episode_id: t.uint64
    step: t.uint32
    obs: t.sequence[t.float32]
    action: Action
    reward: t.float32
    next_obs: t.sequence[t.float32]
    terminated: bool
    truncated: bool
    policy_version: t.uint64
    priority: t.float32
    recurrent_h: t.sequence[t.float32]
    recurrent_c: t.sequence[t.float32]


@ann.final
@dataclass
class TransitionBatch(IdlStruct, typename="reflex_msgs::msg::dds_::TransitionBatch_"):
    wire_version: t.uint16
    robot_id: str
    batch_seq: t.uint64
    transitions: t.sequence[Transition]


@ann.final
@dataclass
class ActionCommand(IdlStruct, typename="reflex_msgs::msg::dds_::ActionCommand_"):
    wire_version: t.uint16
    robot_id: str
    seq: t.uint64
    timestamp_ns: t.uint64
    policy_version: t.uint64
    action: Action


@ann.final
@dataclass
class Observation(IdlStruct, typename="reflex_msgs::msg::dds_::Observation_"):
    wire_version: t.uint16
    robot_id: str
    seq: t.uint64
    timestamp_ns: t.uint64
    episode_id: t.uint64
    step: t.uint32
    values: t.sequence[t.float32]
    reward: t.float32
    terminated: bool
    truncated: bool


# The 4-byte encapsulation header of XCDR1 little-endian ("CDR_LE"): what RustDDS
# sends and accepts. An XCDR2 struct would start 00 07 (final) / 00 09 / 00 0b.
CDR_LE_HEADER = b"\x00\x01\x00\x00"

# ---------------------------------------------------------------------------
# QoS
# ---------------------------------------------------------------------------

XCDR1 = Policy.DataRepresentation(use_cdrv0_representation=True)


def reliable_qos(depth):
    """Reliable, volatile, keep-last `depth`. A reliable writer serves both
    reliable and best-effort readers; a volatile one serves volatile readers
    only (a transient-local reader would not match)."""
    return Qos(
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)),
        Policy.Durability.Volatile,
        Policy.History.KeepLast(depth),
        XCDR1,
    )


def best_effort_qos(depth):
    """Best-effort, volatile, keep-last `depth`: the most permissive reader QoS
    (matches reliable and best-effort writers alike)."""
    return Qos(
        Policy.Reliability.BestEffort,
        Policy.Durability.Volatile,
        Policy.History.KeepLast(depth),
        XCDR1,
    )


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def log(msg):
    print(f"ros2_interop: {msg}", file=sys.stderr, flush=True)


def f32(x):
    """x rounded to the nearest float32, as a Python float (exact in JSON)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def dds_topic_name(ros_topic):
    """ROS 2 topic name -> DDS topic name: `/foo/bar` -> `rt/foo/bar`."""
    return "rt/" + ros_topic.lstrip("/")


def make_writer(dp, ros_topic, typ, qos):
    return DataWriter(dp, Topic(dp, dds_topic_name(ros_topic), typ), qos=qos)


def make_reader(dp, ros_topic, typ, qos):
    return DataReader(dp, Topic(dp, dds_topic_name(ros_topic), typ), qos=qos)


def take_valid(reader, n=256):
    """Takes what the reader has; drops the invalid samples (instance state
    changes such as 'no writers left'), which carry no data."""
    return [s for s in reader.take(N=n) if not isinstance(s, InvalidSample)]


def report_incompatible_qos(writers=(), readers=()):
    """Logs QoS mismatches (cyclonedds counts them; the match just never happens,
    with no error). The policy id is DDS's QosPolicyId: 11 = reliability,
    2 = durability, 23 = data representation."""
    for name, w in writers:
        s = w.get_offered_incompatible_qos_status()
        if s.total_count:
            log(f"writer {name}: {s.total_count} reader(s) with incompatible QoS "
                f"(last policy id {s.last_policy_id})")
    for name, r in readers:
        s = r.get_requested_incompatible_qos_status()
        if s.total_count:
            log(f"reader {name}: {s.total_count} writer(s) with incompatible QoS "
                f"(last policy id {s.last_policy_id})")


def wait_matched(writers=(), readers=(), timeout_s=30.0):
    """Polls until every writer has a matched reader and every reader a matched
    writer. Returns the names still unmatched at the deadline (empty = all)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [n for n, w in writers if not w.get_matched_subscriptions()]
        missing += [n for n, r in readers if not r.get_matched_publications()]
        if not missing or time.monotonic() >= deadline:
            if missing:
                report_incompatible_qos(writers, readers)
            return missing
        time.sleep(0.05)


def to_plain(sample):
    """An IDL struct -> plain dicts/lists/numbers for JSON."""
    return asdict(sample)


def any_mask():
    return SampleState.Any | ViewState.Any | InstanceState.Any


# ---------------------------------------------------------------------------
# Mode: robot
# ---------------------------------------------------------------------------

# The joints in every JointState. reflexd is configured with ["cart", "pole"];
# "unused" comes first and carries values far from the others, to show that
# reflexd picks joints by name, not by position in the message.
JOINT_NAMES = ["unused", "cart", "pole"]
# A fixed base stamp (2023-11-14T22:13:20Z); step k is stamped BASE + k * 20 ms.
BASE_STAMP_NS = 1_700_000_000 * 10**9
STAMP_STEP_NS = 20_000_000
ROBOT_ID = "interop"


def robot_state(k):
    """The deterministic state at step k: {joint: (position, velocity)}."""
    return {
        "unused": (1000.0 + k, -1000.0 - k),
        "cart": (k * 0.01, 0.5 + k),
        "pole": (-k * 0.02, -0.25 * k),
    }


def run_robot(args):
    dp = DomainParticipant(args.domain)
    joint_w = make_writer(dp, args.joint_topic, JointState, reliable_qos(10))
    step_w = make_writer(dp, args.step_info_topic, StepInfo, reliable_qos(10))
    action_r = make_reader(dp, args.action_topic, Float64MultiArray, reliable_qos(10))
    trans_r = make_reader(dp, args.transitions_topic, TransitionBatch, reliable_qos(100))
    writers = [(args.joint_topic, joint_w), (args.step_info_topic, step_w)]
    readers = [(args.action_topic, action_r), (args.transitions_topic, trans_r)]

    waitset = WaitSet(dp)
    waitset.attach(ReadCondition(action_r, any_mask()))
    waitset.attach(ReadCondition(trans_r, any_mask()))

    log(f"domain {args.domain}: waiting up to {args.match_timeout:g} s for readers of "
        f"{args.joint_topic} and {args.step_info_topic}")
    missing = wait_matched(writers=writers, timeout_s=args.match_timeout)
    if missing:
        log(f"error: no matched reader on {', '.join(missing)} after "
            f"{args.match_timeout:g} s (is reflexd running on domain {args.domain}, "
            "with compatible QoS?)")
        return 1
    # reflexd's writers (actions, transitions) are usually discovered together with
    # its readers; give them a moment, but do not insist: they may come up later.
    missing = wait_matched(readers=readers, timeout_s=args.reader_grace)
    if missing:
        log(f"warning: no matched writer yet on {', '.join(missing)}; going on")
    # Discovery is two-sided: our writer seeing reflexd's reader does not mean that
    # reader has seen our writer yet. Volatile samples sent before that are lost.
    time.sleep(args.settle)

    sent, actions, transitions, batches = [], [], [], []
    last_k = -1  # the last step published, recorded with each received sample

    def drain():
        now = time.time_ns()
        for msg in take_valid(action_r):
            actions.append({
                "data": list(msg.data),
                "layout": to_plain(msg.layout),
                "recv_ns": now,
                "after_k": last_k,
            })
        for batch in take_valid(trans_r):
            batches.append({
                "wire_version": batch.wire_version,
                "robot_id": batch.robot_id,
                "batch_seq": batch.batch_seq,
                "count": len(batch.transitions),
                "recv_ns": now,
                "after_k": last_k,
            })
            for tr in batch.transitions:
                d = to_plain(tr)
                d["batch_seq"] = batch.batch_seq
                transitions.append(d)

    def wait_until(deadline):
        """Receives until the monotonic deadline."""
        while True:
            drain()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            waitset.wait(duration(seconds=left))

    log(f"publishing {args.steps} steps at {args.rate:g} Hz")
    period = 1.0 / args.rate
    start = time.monotonic()
    for k in range(args.steps):
        wait_until(start + k * period)
        state = robot_state(k)
        stamp_ns = BASE_STAMP_NS + k * STAMP_STEP_NS
        reward = f32(k * 0.5)
        terminated = k % 50 == 49
        # StepInfo first: reflexd joins it with the JointState of the same stamp.
        step_w.write(StepInfo(
            wire_version=WIRE_VERSION, robot_id=ROBOT_ID, stamp_ns=stamp_ns,
            reward=reward, terminated=terminated, truncated=False))
        joint_w.write(JointState(
            header=Header(
                stamp=Time(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
                frame_id=""),
            name=list(JOINT_NAMES),
            position=[state[j][0] for j in JOINT_NAMES],
            velocity=[state[j][1] for j in JOINT_NAMES],
            effort=[]))
        last_k = k
        # JointState carries float64; reflex keeps observations as float32. `position`
        # and `velocity` are what reflexd should see (float32-rounded, exact in JSON);
        # the *_f64 fields are what went on the wire.
        sent.append({
            "k": k,
            "stamp_ns": stamp_ns,
            "position": [f32(state[j][0]) for j in ("cart", "pole")],
            "velocity": [f32(state[j][1]) for j in ("cart", "pole")],
            "position_f64": [state[j][0] for j in ("cart", "pole")],
            "velocity_f64": [state[j][1] for j in ("cart", "pole")],
            "reward": reward,
            "terminated": terminated,
        })

    # reflexd flushes its transitions batch by batch: keep listening a while.
    log(f"sent {len(sent)} steps; listening {args.linger:g} s more")
    wait_until(time.monotonic() + args.linger)
    for _, w in writers:
        w.wait_for_acks(duration(seconds=1))
    report_incompatible_qos(writers, readers)

    result = {
        "meta": {
            "domain": args.domain,
            "joint_topic": args.joint_topic,
            "step_info_topic": args.step_info_topic,
            "action_topic": args.action_topic,
            "transitions_topic": args.transitions_topic,
            "joint_names": JOINT_NAMES,
            "robot_id": ROBOT_ID,
            "rate_hz": args.rate,
        },
        "sent": sent,
        "actions": actions,
        "transitions": transitions,
        "batches": batches,
    }
    text = json.dumps(result, indent=1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    log(f"received {len(actions)} actions, {len(transitions)} transitions "
        f"in {len(batches)} batches")
    return 0


# ---------------------------------------------------------------------------
# Mode: string-echo
# ---------------------------------------------------------------------------


def run_string_echo(args):
    dp = DomainParticipant(args.domain)
    # Best-effort reader: matches the Rust publisher whatever its reliability.
    reader = make_reader(dp, args.in_topic, String, best_effort_qos(10))
    writer = make_writer(dp, args.out_topic, String, reliable_qos(10))
    waitset = WaitSet(dp)
    waitset.attach(ReadCondition(reader, any_mask()))

    deadline = time.monotonic() + args.timeout
    echoed = 0
    log(f"domain {args.domain}: echoing {args.count} strings from {args.in_topic} "
        f"to {args.out_topic}")
    while echoed < args.count:
        left = deadline - time.monotonic()
        if left <= 0:
            report_incompatible_qos([(args.out_topic, writer)], [(args.in_topic, reader)])
            log(f"error: timeout after {args.timeout:g} s with {echoed}/{args.count} echoes")
            return 1
        waitset.wait(duration(seconds=left))
        for msg in take_valid(reader):
            # Our writer must be matched, or the echo goes nowhere.
            if wait_matched(writers=[(args.out_topic, writer)],
                            timeout_s=max(0.0, deadline - time.monotonic())):
                log(f"error: no reader on {args.out_topic}")
                return 1
            writer.write(String(data="echo: " + msg.data))
            echoed += 1
            log(f"echoed {msg.data!r}")
            if echoed == args.count:
                break
    writer.wait_for_acks(duration(seconds=2))
    time.sleep(0.2)  # a best-effort reader gets no acks: give it a moment
    return 0


# ---------------------------------------------------------------------------
# Mode: self-test
# ---------------------------------------------------------------------------


def self_test_samples():
    """One sample of every type, with non-trivial values (float32 fields hold
    float32-exact values, so equality after a round trip is exact)."""
    action_c = Action(kind=ACTION_KIND_CONTINUOUS, index=0, values=[f32(0.1), -2.5, 3.0])
    action_d = Action(kind=ACTION_KIND_DISCRETE, index=7, values=[])
    transition = Transition(
        wire_version=WIRE_VERSION, robot_id="robot-7", episode_id=2**40 + 3, step=41,
        obs=[f32(0.1), f32(-1e-3), math.inf], action=action_c, reward=f32(-0.7),
        next_obs=[f32(0.2), 5.0, -math.inf], terminated=True, truncated=False,
        policy_version=2**63 + 1, priority=f32(0.3), recurrent_h=[1.0, -1.0],
        recurrent_c=[0.25])
    layout = MultiArrayLayout(
        dim=[MultiArrayDimension(label="rows", size=2, stride=6),
             MultiArrayDimension(label="cols", size=3, stride=3)],
        data_offset=1)
    return [
        Time(sec=-5, nanosec=999_999_999),
        Header(stamp=Time(sec=1_700_000_000, nanosec=20_000_000), frame_id="base_link"),
        JointState(
            header=Header(stamp=Time(sec=1, nanosec=2), frame_id="w"),
            name=["unused", "cart", "pole"], position=[1.5, 0.1, -1e300],
            velocity=[0.0, -0.0, 2.0**-1074], effort=[]),
        MultiArrayDimension(label="x", size=4, stride=4),
        layout,
        Float64MultiArray(layout=layout, data=[0.5, -1.25, 1e-310, 7.0, 8.0, 9.0, 10.0]),
        String(data="héllo, ROS 2 \u2603"),
        StepInfo(wire_version=WIRE_VERSION, robot_id="interop",
                 stamp_ns=1_700_000_000_020_000_000, reward=f32(2.5e-3),
                 terminated=True, truncated=False),
        action_c,
        transition,
        TransitionBatch(wire_version=WIRE_VERSION, robot_id="robot-7", batch_seq=12,
                        transitions=[transition, Transition(
                            wire_version=WIRE_VERSION, robot_id="robot-7", episode_id=3,
                            step=0, obs=[], action=action_d, reward=0.0, next_obs=[],
                            terminated=False, truncated=True, policy_version=0,
                            priority=0.0, recurrent_h=[], recurrent_c=[])]),
        ActionCommand(wire_version=WIRE_VERSION, robot_id="robot-7", seq=99,
                      timestamp_ns=1_700_000_000_123_456_789, policy_version=5,
                      action=action_d),
        Observation(wire_version=WIRE_VERSION, robot_id="robot-7", seq=2**64 - 1,
                    timestamp_ns=123, episode_id=4, step=2**32 - 1,
                    values=[f32(3.14159), -0.5], reward=f32(1.1), terminated=False,
                    truncated=True),
    ]


def run_self_test(args):
    dp = DomainParticipant(args.domain)
    samples = self_test_samples()
    failures = 0

    # 1. Serialization: XCDR1 little-endian header, and a round trip in memory.
    for s in samples:
        name = type(s).__name__
        data = s.serialize()
        if data[:4] != CDR_LE_HEADER:
            log(f"FAIL {name}: encapsulation header {data[:4].hex()}, "
                f"want {CDR_LE_HEADER.hex()} (XCDR1 little-endian)")
            failures += 1
        if type(s).deserialize(data) != s:
            log(f"FAIL {name}: serialize/deserialize round trip differs")
            failures += 1

    # 2. Through DDS: one writer and one reader per type, on its own topic. Every
    # other reader is best-effort, to check a reliable writer serves both kinds.
    pairs = []
    for i, s in enumerate(samples):
        typ = type(s)
        topic = f"/reflex_selftest/{typ.__name__.lower()}_{i}"
        reader_qos = reliable_qos(100) if i % 2 == 0 else best_effort_qos(10)
        w = make_writer(dp, topic, typ, reliable_qos(10))
        r = make_reader(dp, topic, typ, reader_qos)
        pairs.append((topic, s, w, r))
    missing = wait_matched(writers=[(p[0], p[2]) for p in pairs],
                           readers=[(p[0], p[3]) for p in pairs], timeout_s=10)
    if missing:
        log(f"FAIL: not matched: {', '.join(missing)}")
        return 1
    for topic, s, w, _ in pairs:
        w.write(s)
    for topic, s, w, r in pairs:
        got = []
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            got = take_valid(r)
            if not got:
                time.sleep(0.01)
        if len(got) != 1 or got[0] != s:
            log(f"FAIL {topic} ({type(s).__name__}): sent {s!r}, received {got!r}")
            failures += 1
        else:
            print(f"ok  {type(s).__name__:<20} {dds_topic_name(topic)} "
                  f"({len(s.serialize())} bytes)")
    if failures:
        log(f"self-test: {failures} failure(s)")
        return 1
    print(f"self-test: {len(samples)} types ok")
    return 0


# ---------------------------------------------------------------------------


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domain", type=int, default=0, help="DDS domain id (ROS_DOMAIN_ID)")
    sub = p.add_subparsers(dest="mode", required=True)

    r = sub.add_parser("robot", help="simulate a tiny robot for reflexd")
    r.add_argument("--domain", type=int, default=argparse.SUPPRESS)
    r.add_argument("--joint-topic", default="/joint_states")
    r.add_argument("--step-info-topic", default="/reflexd_interop/step_info")
    r.add_argument("--action-topic", default="/reflexd_interop/commands")
    r.add_argument("--transitions-topic", default="/reflexd_interop/transitions")
    r.add_argument("--steps", type=int, default=200)
    r.add_argument("--rate", type=float, default=50.0, help="steps per second")
    r.add_argument("--out", help="JSON result file (default: stdout)")
    r.add_argument("--match-timeout", type=float, default=30.0,
                   help="seconds to wait for reflexd's readers")
    r.add_argument("--reader-grace", type=float, default=5.0,
                   help="seconds to wait for reflexd's writers (then go on anyway)")
    r.add_argument("--settle", type=float, default=0.5,
                   help="seconds to wait after matching, before the first step")
    r.add_argument("--linger", type=float, default=3.0,
                   help="seconds to keep receiving after the last step")

    e = sub.add_parser("string-echo", help="std_msgs/String echo")
    e.add_argument("--domain", type=int, default=argparse.SUPPRESS)
    e.add_argument("--in-topic", default="/reflexd_interop/chatter_out")
    e.add_argument("--out-topic", default="/reflexd_interop/chatter_in")
    e.add_argument("--count", type=int, default=5)
    e.add_argument("--timeout", type=float, default=30.0)

    s = sub.add_parser("self-test", help="round-trip every type in this process")
    s.add_argument("--domain", type=int, default=argparse.SUPPRESS)

    args = p.parse_args()
    if args.mode == "robot":
        if args.steps < 0 or args.rate <= 0:
            p.error("--steps must be >= 0 and --rate > 0")
        return run_robot(args)
    if args.mode == "string-echo":
        return run_string_echo(args)
    return run_self_test(args)


if __name__ == "__main__":
    sys.exit(main())
