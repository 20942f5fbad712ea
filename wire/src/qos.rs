//! Quality of service levels (MQTT 5.0 section 4.3).

/// Quality of service of a message; the discriminant is the value on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum QoS {
    /// At most once: fire and forget.
    AtMostOnce = 0,
    /// At least once: PUBLISH / PUBACK, duplicates possible.
    AtLeastOnce = 1,
    /// Exactly once: PUBLISH / PUBREC / PUBREL / PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for a wire value (two QoS bits, a will QoS, a subscription option or a
    /// granted QoS); `None` for 3 and above, which no packet may carry (MQTT-3.3.1-4).
    #[inline]
    pub const fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }

    /// The QoS bits of a PUBLISH first byte; `None` for QoS 3 (MQTT-3.3.1-4).
    #[inline]
    pub const fn from_publish_byte(byte1: u8) -> Option<QoS> {
        QoS::from_u8((byte1 >> crate::flags::QOS_SHIFT) & 0b11)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values() {
        for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(QoS::from_u8(q as u8), Some(q));
        }
        for v in 3..=255 {
            assert_eq!(QoS::from_u8(v), None);
        }
        assert!(QoS::AtMostOnce < QoS::AtLeastOnce && QoS::AtLeastOnce < QoS::ExactlyOnce);
    }

    #[test]
    fn from_publish_byte() {
        assert_eq!(QoS::from_publish_byte(0x30), Some(QoS::AtMostOnce));
        assert_eq!(QoS::from_publish_byte(0x3B), Some(QoS::AtLeastOnce));
        assert_eq!(QoS::from_publish_byte(0x35), Some(QoS::ExactlyOnce));
        assert_eq!(QoS::from_publish_byte(0x36), None);
    }
}
