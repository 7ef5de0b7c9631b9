"""reflexd, reflex's on-robot daemon, as a ROS 2 node (Python front end).

The same launch as reflexd.launch.xml and reflexd.launch.yaml:

    ros2 launch reflex_bringup reflexd.launch.py robot_id:=robot_1 policy:=/opt/reflex/policy.onnx

reflexd is a standalone binary, not a ROS package: it is started as a process, with
its parameters from params_file (ROS 2 parameter YAML) and the launch arguments
robot_id, policy and rate_hz as -p overrides. daemon/tests/launch_files.rs checks
that this file compiles and declares the same arguments as the XML and YAML files.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    robot_id = LaunchConfiguration('robot_id')
    policy = LaunchConfiguration('policy')
    rate_hz = LaunchConfiguration('rate_hz')
    namespace = LaunchConfiguration('namespace')
    use_sim = LaunchConfiguration('use_sim')
    params_file = LaunchConfiguration('params_file')
    reflexd = LaunchConfiguration('reflexd')

    # The namespace as reflexd takes it: "/" for the root, "/ns" otherwise, whether or
    # not the argument has its leading or trailing '/'.
    ros_namespace = PythonExpression(["'/' + '", namespace, "'.strip('/')"])

    return LaunchDescription([
        DeclareLaunchArgument(
            'robot_id',
            default_value='robot_1',
            description="This robot's id, unique in its fleet; reflexd's node is "
                        'reflexd_<robot_id>'),
        DeclareLaunchArgument(
            'policy',
            description='Path of the ONNX policy reflexd starts with (required)'),
        DeclareLaunchArgument(
            'rate_hz',
            default_value='50.0',
            description='Control-loop rate, Hz'),
        DeclareLaunchArgument(
            'namespace',
            default_value='',
            description="Namespace of reflexd's node, e.g. robot_1 or /robot_1; "
                        'empty = the root namespace'),
        DeclareLaunchArgument(
            'use_sim',
            default_value='false',
            description='true: also start reflex-sim serve standing in for the robot '
                        '(pair with params_file:=.../config/reflexd_sim.yaml)'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution(
                [FindPackageShare('reflex_bringup'), 'config', 'reflexd.yaml']),
            description="reflexd's ROS 2 parameter file"),
        DeclareLaunchArgument(
            'reflexd',
            default_value='reflexd',
            description='The reflexd binary: a path, or a name looked up on PATH'),

        ExecuteProcess(
            name='reflexd',
            output='screen',
            cmd=[
                reflexd, 'run',
                '--ros-params', params_file,
                '--ros-args',
                '-r', ['__ns:=', ros_namespace],
                '-p', ['robot_id:=', robot_id],
                '-p', ['policy.path:=', policy],
                '-p', ['rate_hz:=', rate_hz],
            ]),

        ExecuteProcess(
            name='reflex_sim',
            output='screen',
            condition=IfCondition(use_sim),
            cmd=[
                'reflex-sim', 'serve',
                '--transport', 'ros2',
                '--env', 'cartpole',
                '--robot', robot_id,
                '--ros-namespace', ros_namespace,
            ]),
    ])
