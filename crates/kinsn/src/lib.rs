//! kinsn extension interface, transport, lowering
