// One avatar's recent frames, played out a little behind their arrival so that the moments
// between them can be interpolated by the frames' own timestamps.
using System;
using System.Collections.Generic;

namespace FreeAvatar
{
    /// <summary>An avatar's pose at one moment, interpolated between two frames.</summary>
    public sealed class RigSample
    {
        public float[] Values = new float[0];
        public HeadPose HeadPose;
        public bool FacePresent;
        public float Confidence;
        public ulong Sequence;  // the earlier of the two frames
    }

    /// <summary>
    /// Frames carry the sender's capture time; the buffer maps that clock onto the local one by
    /// the smallest (arrival - capture) gap among recent frames (the frames least held up on the
    /// way), and shows, at local time t, the avatar as captured at t - gap - Delay. With Delay
    /// at a frame interval or two, the frame after that moment has nearly always arrived, so
    /// the pose is interpolated, not held; network jitter under Delay never shows.
    /// </summary>
    public sealed class JitterBuffer
    {
        const int GapWindow = 64;          // frames the clock gap is the minimum over
        const double ClockJumpSeconds = 1;  // a gap this far off: the sender's clock was reset

        /// <summary>Seconds behind the newest frame's arrival that the buffer plays out.</summary>
        public double Delay;

        readonly int capacity;
        readonly List<Entry> frames = new List<Entry>();
        readonly double[] gaps = new double[GapWindow];
        int gapCount, gapNext;
        double gap;

        struct Entry
        {
            public RigFrame Frame;
            public double Source;  // capture time, seconds, sender's clock
        }

        public JitterBuffer(double delaySeconds = 0.05, int capacity = 16)
        {
            if (capacity < 2) throw new ArgumentOutOfRangeException("capacity", "interpolation needs two frames");
            Delay = delaySeconds;
            this.capacity = capacity;
        }

        public int Count { get { return frames.Count; } }

        /// <summary>Seconds to add to a capture time to get its local arrival time, at the least.</summary>
        public double ClockGap { get { return gap; } }

        public void Add(RigFrame frame, double receivedAt)
        {
            double source = frame.CaptureTimeUs != 0 ? frame.CaptureTimeUs / 1e6
                : frame.EmitTimeUs != 0 ? frame.EmitTimeUs / 1e6 : receivedAt;
            double arrivalGap = receivedAt - source;
            bool rigChanged = frames.Count > 0 && frames[0].Frame.Values.Length != frame.Values.Length;
            if (rigChanged || (gapCount > 0 && Math.Abs(arrivalGap - gap) > ClockJumpSeconds)) Clear();
            int at = frames.Count;
            while (at > 0 && frames[at - 1].Source > source) at--;  // late frames slot in by time
            if (at > 0 && frames[at - 1].Source == source) return;  // a repeat
            frames.Insert(at, new Entry { Frame = frame, Source = source });
            if (frames.Count > capacity) frames.RemoveAt(0);
            gaps[gapNext] = arrivalGap;
            gapNext = (gapNext + 1) % GapWindow;
            gapCount = Math.Min(gapCount + 1, GapWindow);
            gap = double.MaxValue;
            for (int i = 0; i < gapCount; i++) gap = Math.Min(gap, gaps[i]);
        }

        public void Clear()
        {
            frames.Clear();
            gapCount = gapNext = 0;
            gap = 0;
        }

        /// <summary>The pose to show at local time `now` (the clock frames were stamped with on
        /// arrival); false while the buffer is empty. Holds the newest pose once past it.</summary>
        public bool Sample(double now, RigSample into)
        {
            if (frames.Count == 0) return false;
            double t = now - gap - Delay;
            int before = frames.Count - 1;
            while (before > 0 && frames[before].Source > t) before--;
            // Frames before the earlier of the pair are past for good.
            if (before > 0) frames.RemoveRange(0, before);
            var a = frames[0];
            var b = frames.Count > 1 ? frames[1] : a;
            double span = b.Source - a.Source;
            float f = span > 0 ? (float)Math.Max(0, Math.Min(1, (t - a.Source) / span)) : 0f;
            Lerp(a.Frame, b.Frame, f, into);
            return true;
        }

        static void Lerp(RigFrame a, RigFrame b, float f, RigSample into)
        {
            int n = a.Values.Length;
            if (into.Values.Length != n) into.Values = new float[n];
            for (int i = 0; i < n; i++) into.Values[i] = a.Values[i] + (b.Values[i] - a.Values[i]) * f;
            into.HeadPose.Yaw = a.HeadPose.Yaw + (b.HeadPose.Yaw - a.HeadPose.Yaw) * f;
            into.HeadPose.Pitch = a.HeadPose.Pitch + (b.HeadPose.Pitch - a.HeadPose.Pitch) * f;
            into.HeadPose.Roll = a.HeadPose.Roll + (b.HeadPose.Roll - a.HeadPose.Roll) * f;
            into.Confidence = a.Confidence + (b.Confidence - a.Confidence) * f;
            into.FacePresent = f < 0.5f ? a.FacePresent : b.FacePresent;
            into.Sequence = a.Sequence;
        }
    }
}
