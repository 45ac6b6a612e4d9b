// A small proto3 reader and writer for exactly the messages a rig stream uses.
//
// Why not Google.Protobuf: the engine-independent core is built and tested outside Unity, where
// no C# protobuf runtime can be installed (no NuGet; Debian and npm carry none). So the core
// reads the wire format itself, for these few messages only, and the same code runs in Unity:
// the gRPC transport hands it raw message bytes. The tests hold it to the Python server's own
// encoding (tests/unity_client). It follows the proto3 rules a decoder must: fields in any
// order, unknown fields skipped, repeated floats packed or not, the last value of a field wins.
using System;
using System.Collections.Generic;
using System.Text;

namespace FreeAvatar
{
    /// <summary>Bytes that are not a valid message of the expected type.</summary>
    public sealed class RigWireException : FormatException
    {
        public RigWireException(string message) : base(message) { }
    }

    public static class RigWire
    {
        // Wire types. Groups (3, 4) are proto2's; they can still arrive as unknown fields.
        const int WireVarint = 0, WireFixed64 = 1, WireBytes = 2, WireGroupStart = 3, WireGroupEnd = 4, WireFixed32 = 5;

        public static RigStreamMessage ParseRigStreamMessage(byte[] data)
        {
            return ParseRigStreamMessage(data, 0, data.Length);
        }

        public static RigStreamMessage ParseRigStreamMessage(byte[] data, int offset, int length)
        {
            var reader = new Reader(data, offset, length);
            var message = new RigStreamMessage();
            while (reader.More)
            {
                int field, wire;
                reader.Tag(out field, out wire);
                if (field == 1 && wire == WireBytes)  // oneof kind: the last one set wins
                {
                    message.Controls = ParseAvatarControls(reader.Bytes(), message.Controls);
                    message.Frame = null;
                }
                else if (field == 2 && wire == WireBytes)
                {
                    message.Frame = ParseRigFrame(reader.Bytes(), message.Frame);
                    message.Controls = null;
                }
                else
                {
                    reader.Skip(wire, field);
                }
            }
            if (message.Controls == null && message.Frame == null)
            {
                throw new RigWireException("the message holds neither controls nor a frame");
            }
            return message;
        }

        /// <summary>Reads a RigFrame; into `frame` if given (a repeated message field merges).</summary>
        static RigFrame ParseRigFrame(Segment bytes, RigFrame frame)
        {
            frame = frame ?? new RigFrame();
            var reader = new Reader(bytes);
            List<float> values = null;
            while (reader.More)
            {
                int field, wire;
                reader.Tag(out field, out wire);
                switch (field * 8 + wire)
                {
                    case 1 * 8 + WireBytes: frame.AvatarId = reader.String(); break;
                    case 2 * 8 + WireBytes: frame.SessionId = reader.String(); break;
                    case 3 * 8 + WireBytes: frame.ActorId = reader.String(); break;
                    case 4 * 8 + WireVarint: frame.Sequence = reader.Varint(); break;
                    case 5 * 8 + WireVarint: frame.CaptureTimeUs = (long)reader.Varint(); break;
                    case 6 * 8 + WireVarint: frame.EmitTimeUs = (long)reader.Varint(); break;
                    case 7 * 8 + WireBytes:  // packed, as proto3 writes them
                        values = values ?? new List<float>(frame.Values);
                        var packed = new Reader(reader.Bytes());
                        while (packed.More) values.Add(packed.Float());
                        break;
                    case 7 * 8 + WireFixed32:  // unpacked, as a decoder must also accept
                        values = values ?? new List<float>(frame.Values);
                        values.Add(reader.Float());
                        break;
                    case 8 * 8 + WireVarint: frame.FacePresent = reader.Varint() != 0; break;
                    case 9 * 8 + WireFixed32: frame.Confidence = reader.Float(); break;
                    case 10 * 8 + WireBytes: frame.HeadPose = ParseHeadPose(reader.Bytes(), frame.HeadPose); break;
                    default: reader.Skip(wire, field); break;
                }
            }
            if (values != null) frame.Values = values.ToArray();
            return frame;
        }

        static HeadPose ParseHeadPose(Segment bytes, HeadPose pose)
        {
            var reader = new Reader(bytes);
            while (reader.More)
            {
                int field, wire;
                reader.Tag(out field, out wire);
                if (wire == WireFixed32 && field == 1) pose.Yaw = reader.Float();
                else if (wire == WireFixed32 && field == 2) pose.Pitch = reader.Float();
                else if (wire == WireFixed32 && field == 3) pose.Roll = reader.Float();
                else reader.Skip(wire, field);
            }
            return pose;
        }

        static AvatarControls ParseAvatarControls(Segment bytes, AvatarControls controls)
        {
            controls = controls ?? new AvatarControls();
            var names = new List<string>(controls.ControlNames);
            var aliases = new List<string>(controls.ArkitAliases);
            var reader = new Reader(bytes);
            while (reader.More)
            {
                int field, wire;
                reader.Tag(out field, out wire);
                if (wire != WireBytes) { reader.Skip(wire, field); continue; }
                switch (field)
                {
                    case 1: controls.AvatarId = reader.String(); break;
                    case 2: controls.AvatarName = reader.String(); break;
                    case 3: names.Add(reader.String()); break;
                    case 4: aliases.Add(reader.String()); break;
                    default: reader.Skip(wire, field); break;
                }
            }
            controls.ControlNames = names.ToArray();
            controls.ArkitAliases = aliases.ToArray();
            return controls;
        }

        public static byte[] Encode(SubscribeRequest request)
        {
            var writer = new List<byte>();
            WriteString(writer, 1, request.SessionId);
            WriteString(writer, 2, request.SessionToken);
            foreach (var avatarId in request.AvatarIds) WriteString(writer, 3, avatarId, always: true);
            return writer.ToArray();
        }

        static void WriteString(List<byte> writer, int field, string value, bool always = false)
        {
            if (string.IsNullOrEmpty(value) && !always) return;  // proto3 leaves defaults out
            var bytes = Encoding.UTF8.GetBytes(value ?? "");
            WriteVarint(writer, (ulong)(field << 3 | WireBytes));
            WriteVarint(writer, (ulong)bytes.Length);
            writer.AddRange(bytes);
        }

        static void WriteVarint(List<byte> writer, ulong value)
        {
            while (value >= 0x80)
            {
                writer.Add((byte)(value | 0x80));
                value >>= 7;
            }
            writer.Add((byte)value);
        }

        struct Segment
        {
            public byte[] Data;
            public int Start;
            public int End;
        }

        /// <summary>A cursor over one message's bytes; every read checks the bounds.</summary>
        sealed class Reader
        {
            readonly byte[] data;
            readonly int end;
            int position;

            public Reader(byte[] data, int offset, int length)
            {
                if (data == null) throw new ArgumentNullException("data");
                if (offset < 0 || length < 0 || offset + length > data.Length)
                    throw new ArgumentOutOfRangeException("length", "the range is outside the buffer");
                this.data = data;
                position = offset;
                end = offset + length;
            }

            public Reader(Segment segment) : this(segment.Data, segment.Start, segment.End - segment.Start) { }

            public bool More { get { return position < end; } }

            public void Tag(out int field, out int wire)
            {
                ulong tag = Varint();
                field = (int)(tag >> 3);
                wire = (int)(tag & 7);
                if (field <= 0 || tag >> 3 > int.MaxValue) throw new RigWireException("invalid field number " + (tag >> 3));
            }

            public ulong Varint()
            {
                ulong value = 0;
                for (int shift = 0; shift < 64; shift += 7)
                {
                    byte b = Next();
                    value |= (ulong)(b & 0x7F) << shift;
                    if (b < 0x80) return value;
                }
                throw new RigWireException("a varint runs past 10 bytes");
            }

            public float Float()
            {
                Need(4);
                float value;
                if (BitConverter.IsLittleEndian)
                {
                    value = BitConverter.ToSingle(data, position);
                }
                else
                {
                    var bytes = new byte[4];
                    Array.Copy(data, position, bytes, 0, 4);
                    Array.Reverse(bytes);
                    value = BitConverter.ToSingle(bytes, 0);
                }
                position += 4;
                return value;
            }

            public Segment Bytes()
            {
                ulong length = Varint();
                if (length > (ulong)(end - position)) throw new RigWireException("a field runs past the end of its message");
                var segment = new Segment { Data = data, Start = position, End = position + (int)length };
                position = segment.End;
                return segment;
            }

            public string String()
            {
                var segment = Bytes();
                return Encoding.UTF8.GetString(data, segment.Start, segment.End - segment.Start);
            }

            /// <summary>Steps over an unknown field (a group: up to its matching end).</summary>
            public void Skip(int wire, int field = 0, int depth = 0)
            {
                switch (wire)
                {
                    case WireVarint: Varint(); break;
                    case WireFixed64: Need(8); position += 8; break;
                    case WireBytes: Bytes(); break;
                    case WireFixed32: Need(4); position += 4; break;
                    case WireGroupStart:
                        if (depth > 32) throw new RigWireException("groups nest too deep");
                        while (true)
                        {
                            int inner, innerWire;
                            Tag(out inner, out innerWire);
                            if (innerWire == WireGroupEnd)
                            {
                                if (inner != field) throw new RigWireException("a group ends with the wrong field number");
                                return;
                            }
                            Skip(innerWire, inner, depth + 1);
                        }
                    default: throw new RigWireException("unexpected wire type " + wire);
                }
            }

            byte Next()
            {
                Need(1);
                return data[position++];
            }

            void Need(int count)
            {
                if (end - position < count) throw new RigWireException("the message is truncated");
            }
        }
    }
}
