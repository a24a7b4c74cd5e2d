//! idiom recognizer passes
