// The messages of a rig stream (proto/freeavatar/v1/rig.proto and stream.proto), as plain C#
// classes: what RigWire reads from and writes to the protobuf wire format.

namespace FreeAvatar
{
    /// <summary>Head orientation in degrees: +yaw towards the image's right, +pitch up, +roll clockwise.</summary>
    public struct HeadPose
    {
        public float Yaw;
        public float Pitch;
        public float Roll;
    }

    /// <summary>One avatar's controls for one source video frame (rig.proto RigFrame).</summary>
    public sealed class RigFrame
    {
        public string AvatarId = "";
        public string SessionId = "";
        public string ActorId = "";
        public ulong Sequence;          // per (session, actor, avatar), increasing; gaps are drops
        public long CaptureTimeUs;      // the source frame's capture time, sender's clock
        public long EmitTimeUs;         // when the server emitted it, microseconds since the epoch
        public float[] Values = new float[0];  // in the order of the avatar's control names
        public bool FacePresent;
        public float Confidence;
        public HeadPose HeadPose;
    }

    /// <summary>An avatar's control names, sent once per stream before its first frame.</summary>
    public sealed class AvatarControls
    {
        public string AvatarId = "";
        public string AvatarName = "";
        public string[] ControlNames = new string[0];
        public string[] ArkitAliases = new string[0];  // parallel to ControlNames; "" where none
    }

    /// <summary>What a subscribe stream carries: control names or a frame (exactly one is set).</summary>
    public sealed class RigStreamMessage
    {
        public AvatarControls Controls;
        public RigFrame Frame;
    }

    /// <summary>StreamService.Subscribe's request: a session's frames, of some avatars or all.</summary>
    public sealed class SubscribeRequest
    {
        public string SessionId = "";
        public string SessionToken = "";  // needed when the server runs with API keys
        public string[] AvatarIds = new string[0];  // empty: every avatar of the session
    }

    /// <summary>gRPC status codes the client tells apart.</summary>
    public static class StatusCodes
    {
        public const int Ok = 0;
        public const int Cancelled = 1;
        public const int InvalidArgument = 3;
        public const int NotFound = 5;
        public const int PermissionDenied = 7;
        public const int Unimplemented = 12;
        public const int Unavailable = 14;
        public const int Unauthenticated = 16;

        /// <summary>Failures that retrying the same call cannot mend (a wrong session id or
        /// token, a server without the service); everything else is worth a reconnect.</summary>
        public static bool IsPermanent(int code)
        {
            return code == InvalidArgument || code == NotFound || code == PermissionDenied
                || code == Unauthenticated || code == Unimplemented;
        }

        public static string Name(int code)
        {
            string[] names =
            {
                "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                "UNAUTHENTICATED",
            };
            return code >= 0 && code < names.Length ? names[code] : "STATUS_" + code;
        }
    }
}
