// The hand-over from the receiving thread to the main thread: the newest frame per avatar.
using System.Collections.Generic;

namespace FreeAvatar
{
    public struct ReceivedFrame
    {
        public RigFrame Frame;
        public AvatarControls Controls;  // the avatar's control names, as announced on the stream
        public double ReceivedAt;        // MonotonicClock seconds, when it came off the network
    }

    /// <summary>
    /// The receiving thread offers every message; the main thread takes, once per engine frame,
    /// the newest frame of each avatar. A frame not yet taken when a newer one arrives is
    /// replaced (counted in Replaced): a slow main thread sees fewer frames, never older ones.
    /// </summary>
    public sealed class LatestFrames
    {
        readonly object gate = new object();
        readonly Dictionary<string, ReceivedFrame> pending = new Dictionary<string, ReceivedFrame>();
        readonly Dictionary<string, AvatarControls> controls = new Dictionary<string, AvatarControls>();
        long received, replaced;

        public long Received { get { lock (gate) return received; } }
        public long Replaced { get { lock (gate) return replaced; } }

        /// <summary>Called on the receiving thread.</summary>
        public void Offer(RigStreamMessage message, double receivedAt)
        {
            lock (gate)
            {
                if (message.Controls != null)
                {
                    controls[message.Controls.AvatarId] = message.Controls;
                    return;
                }
                var frame = message.Frame;
                AvatarControls named;
                controls.TryGetValue(frame.AvatarId, out named);
                received++;
                if (pending.ContainsKey(frame.AvatarId)) replaced++;
                pending[frame.AvatarId] = new ReceivedFrame { Frame = frame, Controls = named, ReceivedAt = receivedAt };
            }
        }

        /// <summary>Called on the main thread: moves the newest frame of each avatar into `into`.</summary>
        public int TakeAll(List<ReceivedFrame> into)
        {
            lock (gate)
            {
                into.AddRange(pending.Values);
                int count = pending.Count;
                pending.Clear();
                return count;
            }
        }

        /// <summary>The avatar's control names, if the stream has announced them.</summary>
        public AvatarControls ControlsOf(string avatarId)
        {
            lock (gate)
            {
                AvatarControls named;
                return controls.TryGetValue(avatarId, out named) ? named : null;
            }
        }
    }
}
