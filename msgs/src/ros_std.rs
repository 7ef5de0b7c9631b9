//! The standard ROS 2 messages reflex adapts to, as serde structs with the same CDR
//! layout as rclcpp/rclpy's: robots publish `sensor_msgs/msg/JointState` (or
//! `std_msgs/msg/Float64MultiArray`) and take `std_msgs/msg/Float64MultiArray` (what
//! ros2_control's forward command controllers take) or `geometry_msgs/msg/Twist`
//! (mobile bases).
//!
//! Each type names its ROS 2 package and message through [`RosMessage`], so a
//! transport can declare the topic with the DDS type name ROS 2 tools expect
//! (`sensor_msgs::msg::dds_::JointState_`).

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// A ROS 2 message type: its interface package and name.
pub trait RosMessage {
    /// Interface package, e.g. `"sensor_msgs"`.
    const PACKAGE: &'static str;
    /// Message name, e.g. `"JointState"`.
    const NAME: &'static str;
}

macro_rules! ros_message {
    ($ty:ty, $package:literal, $name:literal) => {
        impl RosMessage for $ty {
            const PACKAGE: &'static str = $package;
            const NAME: &'static str = $name;
        }
    };
}

/// `builtin_interfaces/msg/Time`: seconds and nanoseconds since the UNIX epoch (or
/// since simulation start under sim time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Time {
    /// Whole seconds.
    pub sec: i32,
    /// Nanoseconds past `sec`, below 10^9.
    pub nanosec: u32,
}

impl Time {
    /// Nanoseconds since the epoch (negative times clamp to 0).
    pub fn as_nanos(&self) -> u64 {
        if self.sec < 0 {
            return 0;
        }
        self.sec as u64 * 1_000_000_000 + u64::from(self.nanosec)
    }

    /// The time `ns` nanoseconds after the epoch (seconds saturate at `i32::MAX`).
    pub fn from_nanos(ns: u64) -> Self {
        Self {
            sec: (ns / 1_000_000_000).min(i32::MAX as u64) as i32,
            nanosec: (ns % 1_000_000_000) as u32,
        }
    }
}
ros_message!(Time, "builtin_interfaces", "Time");

/// `std_msgs/msg/Header`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// When the data was sensed.
    pub stamp: Time,
    /// Coordinate frame of the data.
    pub frame_id: String,
}
ros_message!(Header, "std_msgs", "Header");

/// `sensor_msgs/msg/JointState`: named joints with positions, velocities and efforts
/// (each array empty or as long as `name`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    /// Stamp and frame.
    pub header: Header,
    /// Joint names.
    pub name: Vec<String>,
    /// Positions (rad or m).
    pub position: Vec<f64>,
    /// Velocities (rad/s or m/s).
    pub velocity: Vec<f64>,
    /// Efforts (N·m or N).
    pub effort: Vec<f64>,
}
ros_message!(JointState, "sensor_msgs", "JointState");

/// `std_msgs/msg/MultiArrayDimension`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiArrayDimension {
    /// Label of the dimension.
    pub label: String,
    /// Size of the dimension.
    pub size: u32,
    /// Stride of the dimension.
    pub stride: u32,
}
ros_message!(MultiArrayDimension, "std_msgs", "MultiArrayDimension");

/// `std_msgs/msg/MultiArrayLayout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiArrayLayout {
    /// The dimensions (empty for a plain vector).
    pub dim: Vec<MultiArrayDimension>,
    /// Padding elements at the front of `data`.
    pub data_offset: u32,
}
ros_message!(MultiArrayLayout, "std_msgs", "MultiArrayLayout");

/// `std_msgs/msg/Float64MultiArray`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64MultiArray {
    /// Layout of `data` (reflex writes one dimension labelled by the topic's use).
    pub layout: MultiArrayLayout,
    /// The values.
    pub data: Vec<f64>,
}
ros_message!(Float64MultiArray, "std_msgs", "Float64MultiArray");

impl Float64MultiArray {
    /// A one-dimensional array of `data` with dimension label `label`.
    pub fn vector(label: &str, data: Vec<f64>) -> Self {
        Self {
            layout: MultiArrayLayout {
                dim: alloc::vec![MultiArrayDimension {
                    label: label.into(),
                    size: data.len() as u32,
                    stride: data.len() as u32,
                }],
                data_offset: 0,
            },
            data,
        }
    }

    /// The values after `layout.data_offset`.
    pub fn values(&self) -> &[f64] {
        self.data
            .get(self.layout.data_offset as usize..)
            .unwrap_or(&[])
    }
}

/// `geometry_msgs/msg/Vector3`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Vector3 {
    /// x component.
    pub x: f64,
    /// y component.
    pub y: f64,
    /// z component.
    pub z: f64,
}
ros_message!(Vector3, "geometry_msgs", "Vector3");

/// `geometry_msgs/msg/Twist`: linear (m/s) and angular (rad/s) velocity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Twist {
    /// Linear velocity, m/s.
    pub linear: Vector3,
    /// Angular velocity, rad/s.
    pub angular: Vector3,
}
ros_message!(Twist, "geometry_msgs", "Twist");

/// `std_msgs/msg/String`. It serializes as a struct with one string field, which has
/// the same CDR bytes as the bare string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringMsg {
    /// The text.
    pub data: String,
}
ros_message!(StringMsg, "std_msgs", "String");

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;

    #[test]
    fn time_round_trips_nanoseconds() {
        let t = Time::from_nanos(1_700_000_000_123_456_789);
        assert_eq!(t.sec, 1_700_000_000);
        assert_eq!(t.nanosec, 123_456_789);
        assert_eq!(t.as_nanos(), 1_700_000_000_123_456_789);
        assert_eq!(
            Time {
                sec: -1,
                nanosec: 5
            }
            .as_nanos(),
            0
        );
    }

    #[test]
    fn float64_multi_array_honours_data_offset() {
        let mut a = Float64MultiArray::vector("action", alloc::vec![1.0, 2.0, 3.0]);
        assert_eq!(a.layout.dim[0].size, 3);
        assert_eq!(a.values(), &[1.0, 2.0, 3.0]);
        a.layout.data_offset = 2;
        assert_eq!(a.values(), &[3.0]);
        a.layout.data_offset = 7;
        assert!(a.values().is_empty());
    }

    #[test]
    fn joint_state_cdr_layout_matches_rclcpp() {
        // Offsets count from the body's start (the encapsulation header is not
        // included): stamp 0..8, frame_id 8..13 (+3 pad), name 16..26 (+2 pad),
        // position count 28..32, 1.5 at 32 (8-aligned), velocity and effort counts.
        let js = JointState {
            header: Header {
                stamp: Time { sec: 1, nanosec: 2 },
                frame_id: String::new(),
            },
            name: alloc::vec!["a".into()],
            position: alloc::vec![1.5],
            velocity: alloc::vec![],
            effort: alloc::vec![],
        };
        let bytes = cdr_encoding::to_vec::<_, byteorder::LittleEndian>(&js).unwrap();
        let expected: &[u8] = &[
            1, 0, 0, 0, 2, 0, 0, 0, // stamp
            1, 0, 0, 0, 0, 0, 0, 0, // frame_id: length 1 (the NUL), then pad to 4
            1, 0, 0, 0, 2, 0, 0, 0, b'a', 0, 0, 0, // name: 1 string "a\0", pad
            1, 0, 0, 0, // position: count 1
            0, 0, 0, 0, 0, 0, 0xf8, 0x3f, // 1.5
            0, 0, 0, 0, 0, 0, 0, 0, // velocity, effort: empty
        ];
        assert_eq!(bytes, expected);
    }
}
